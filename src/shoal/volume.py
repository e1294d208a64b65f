"""Modal's ``modal.volume`` module path: ``from shoal.volume import Volume``."""

from shoal.client.volume import FileEntry, Volume

__all__ = ["FileEntry", "Volume"]
