"""Modal's ``modal.image`` module path: ``from shoal.image import Image``."""

from shoal.client.image import Image

__all__ = ["Image"]
