"""Modal's ``modal.queue`` module path: ``from shoal.queue import Queue``."""

from shoal.client.queue import Queue

__all__ = ["Queue"]
