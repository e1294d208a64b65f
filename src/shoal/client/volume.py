"""``shoal.Volume``: a folder that functions' containers see at a path of their choice.

``volumes={"/data": vol}`` on a function puts volume ``vol`` at ``/data`` in each of
its containers (on the local backend, a mount namespace of the container's own:
:mod:`shoal.container.mounts`); every container sees the same folder, live. The
handle also reads and writes files of the volume from anywhere, through the server
that keeps it. Each method has an ``.aio`` form.

Example::

    vol = shoal.Volume.from_name("models", create_if_missing=True)

    @app.function(volumes={"/models": vol})
    def train():
        open("/models/weights.bin", "wb").write(b"...")
        vol.commit()

    print([entry.path for entry in vol.listdir("/")])
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from shoal.bridge import bridged, bridged_iter
from shoal.client.objects import NamedObject
from shoal.exception import InvalidError


@dataclass(frozen=True)
class FileEntry:
    """One entry of :meth:`Volume.listdir`: its path, ``"file"`` or ``"dir"``, size, mtime."""

    path: str
    type: str
    size: int
    mtime: float


class Volume(NamedObject):
    """A named folder kept by the server (see the module docstring)."""

    kind = "volume"
    #: Mounted read-only (see :meth:`read_only`).
    is_read_only = False

    def read_only(self) -> Volume:
        """This volume, to be mounted read-only (``Sandbox.create(volumes={"/data":
        vol.read_only()})``): nothing inside can write to it."""
        found = type(self)(self.name, create=self.create_if_missing, opened=self._opened)
        found.is_read_only = True
        return found

    @bridged
    async def commit(self) -> None:
        """Flush what containers wrote to disk (they share the folder live, so others see
        it already)."""
        await self._op("commit")

    @bridged
    async def reload(self) -> None:
        """See what other containers committed: on the local backend they share the
        folder live, so there is nothing to fetch; checks the volume still exists."""
        await self._op("ls", path="")

    @bridged
    async def listdir(self, path: str = "/", recursive: bool = False) -> list[FileEntry]:
        """The entries of folder ``path`` (``recursive``: of its subfolders too)."""
        entries = [FileEntry(**row) for row in await self._op("ls", path=path)]
        if not recursive:
            return entries
        found = []
        for entry in entries:
            full = os.path.join(path, entry.path)
            found.append(FileEntry(full.lstrip("/"), entry.type, entry.size, entry.mtime))
            if entry.type == "dir":
                found += await self.listdir.aio(full, recursive=True)
        return found

    @bridged_iter
    async def read_file(self, path: str) -> AsyncIterator[list[bytes]]:
        """The contents of file ``path``, as chunks of bytes."""
        yield [await self._op("get", path=path)]

    @bridged
    async def write_file(self, path: str, data: bytes) -> None:
        """Write ``data`` to file ``path`` (its folders are created)."""
        if not isinstance(data, bytes | bytearray):
            raise InvalidError("write_file takes bytes")
        await self._op("put", path=path, data=bytes(data))

    @bridged
    async def remove_file(self, path: str, recursive: bool = False) -> None:
        """Remove file ``path`` (a folder needs ``recursive``)."""
        await self._op("rm", path=path, recursive=recursive)


def mounts(volumes: Mapping[str, Volume] | None, where: str) -> tuple[tuple[str, str, bool], ...]:
    """``volumes={...}`` as a spec holds them: (path, volume name, create if missing).

    Raises:
        InvalidError: a path that is not absolute, is ``/``, or is given twice, or a
            value that is not a ``shoal.Volume``.
    """
    out = []
    seen: set[str] = set()
    for path, volume in (volumes or {}).items():
        if not isinstance(volume, Volume):
            raise InvalidError(f"{where}: volumes[{path!r}] must be a shoal.Volume")
        if volume.is_read_only and where != "Sandbox.create":
            raise InvalidError(f"{where}: read-only volumes are for sandboxes (not functions yet)")
        normal = os.path.normpath(str(path))
        if not normal.startswith("/") or normal == "/":
            raise InvalidError(f"{where}: volume path {path!r} must be absolute, and not /")
        if normal in seen:
            raise InvalidError(f"{where}: two volumes at {normal}")
        seen.add(normal)
        out.append((normal, volume.name, volume.create_if_missing))
    return tuple(out)
