"""``shoal.container_process``, where Modal keeps it: what ``Sandbox.exec`` returns and its
streams (:mod:`shoal.client.container_process`)."""

from shoal.client.container_process import ContainerProcess, StreamReader, StreamWriter

__all__ = ["ContainerProcess", "StreamReader", "StreamWriter"]
