"""``shoal.file_io``, where Modal keeps it: the events of a sandbox's
``filesystem.watch`` (:mod:`shoal.client.sandbox`)."""

from shoal.client.sandbox import FileWatchEvent, FileWatchEventType

__all__ = ["FileWatchEvent", "FileWatchEventType"]
