"""Volumes: named folders a server keeps under its home, mounted into containers.

A volume is the folder ``HOME/volumes/NAME``. Containers of a function with
``volumes={"/data": vol}`` see it at ``/data`` (:mod:`shoal.container.mounts`),
all of them the same folder at once: a write is visible to every container at
once, so ``commit()`` only flushes it to disk and ``reload()`` has nothing to do.
The ops here (``volume_*``) serve ``shoal volume ...`` and the ``Volume`` handle's
file methods; paths inside a volume are relative to its top and cannot leave it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
from typing import Any

from shoal import settings
from shoal.exception import InvalidError, NotFoundError, RequestSizeError
from shoal.server.names import check_name


class Volumes:
    """Every volume of one home (``folder`` holds one folder per volume)."""

    def __init__(self, folder: str) -> None:
        self._folder = folder
        os.makedirs(folder, mode=0o700, exist_ok=True)

    def path(self, name: str) -> str:
        """The folder of volume ``name``.

        Raises:
            NotFoundError: there is none.
        """
        folder = os.path.join(self._folder, check_name(name, "Volume"))
        if not os.path.isdir(folder):
            raise NotFoundError(
                f"no Volume {name!r}; create it with create_if_missing=True or "
                f"`shoal volume create {name}`"
            )
        return folder

    def _inside(self, name: str, path: object) -> str:
        """``path`` within volume ``name``, refusing one that leaves it."""
        if not isinstance(path, str):
            raise InvalidError("a volume path must be a string")
        top = self.path(name)
        full = os.path.normpath(os.path.join(top, path.lstrip("/")))
        if full != top and not full.startswith(top + os.sep):
            raise InvalidError(f"path {path!r} leaves volume {name!r}")
        return full

    async def handle(self, op: str, body: dict[str, Any]) -> Any:
        """Answer one ``volume_*`` op.

        Raises:
            InvalidError, NotFoundError, RequestSizeError: as each op says.
        """
        handler = getattr(self, f"_{op}", None)
        if handler is None or not op.startswith("volume_"):
            raise InvalidError(f"unknown volume op {op!r}")
        return await asyncio.to_thread(handler, body)  # file work: off the loop

    def _volume_open(self, body: dict[str, Any]) -> Any:
        name = check_name(body.get("name"), "Volume")
        folder = os.path.join(self._folder, name)
        if os.path.isdir(folder):
            return {"created": False}
        if not body.get("create"):
            self.path(name)  # raises NotFoundError
        os.makedirs(folder, mode=0o755, exist_ok=True)
        return {"created": True}

    def _volume_list(self, body: dict[str, Any]) -> Any:
        names = sorted(os.listdir(self._folder))
        folders = [(n, os.stat(os.path.join(self._folder, n))) for n in names]
        return [{"name": n, "created": info.st_ctime} for n, info in folders]

    def _volume_delete(self, body: dict[str, Any]) -> Any:
        folder = self.path(str(body.get("name")))
        shutil.rmtree(folder)
        return {}

    def _volume_ls(self, body: dict[str, Any]) -> Any:
        full = self._inside(str(body.get("name")), body.get("path", ""))
        if os.path.isfile(full):
            return [_entry(full, os.path.basename(full))]
        if not os.path.isdir(full):
            raise NotFoundError(f"no {body.get('path')!r} in volume {body.get('name')!r}")
        return [_entry(os.path.join(full, n), n) for n in sorted(os.listdir(full))]

    def _volume_put(self, body: dict[str, Any]) -> Any:
        full = self._inside(str(body.get("name")), body.get("path"))
        data = body.get("data")
        if not isinstance(data, bytes):
            raise InvalidError("volume_put: data must be bytes")
        if len(data) > settings.max_payload_bytes():
            raise RequestSizeError(f"a file of {len(data)} bytes exceeds SHOAL_MAX_PAYLOAD_BYTES")
        if os.path.isdir(full):
            raise InvalidError(f"{body.get('path')!r} is a folder in the volume")
        if not body.get("overwrite", True) and os.path.lexists(full):
            raise InvalidError(
                f"{body.get('path')!r} exists in volume {body.get('name')!r}; "
                "overwrite it with --force"
            )
        os.makedirs(os.path.dirname(full), exist_ok=True)
        _write_file(full, data)
        return {}

    def _volume_get(self, body: dict[str, Any]) -> Any:
        full = self._inside(str(body.get("name")), body.get("path"))
        if not os.path.isfile(full):
            raise NotFoundError(f"no file {body.get('path')!r} in volume {body.get('name')!r}")
        if os.path.getsize(full) > settings.max_payload_bytes():
            raise RequestSizeError(f"{body.get('path')!r} is larger than SHOAL_MAX_PAYLOAD_BYTES")
        return _read_file(full)

    def _volume_rm(self, body: dict[str, Any]) -> Any:
        name = str(body.get("name"))
        full = self._inside(name, body.get("path"))
        if full == self.path(name):
            raise InvalidError("remove a volume with `shoal volume delete`, not rm")
        if os.path.isdir(full) and not os.path.islink(full):
            if not body.get("recursive"):
                raise InvalidError(f"{body.get('path')!r} is a folder: remove it recursively")
            shutil.rmtree(full)
        elif os.path.lexists(full):
            os.unlink(full)
        else:
            raise NotFoundError(f"no {body.get('path')!r} in volume {name!r}")
        return {}

    def _volume_commit(self, body: dict[str, Any]) -> Any:
        self.path(str(body.get("name")))
        os.sync()  # every container writes the folder itself
        return {}


def _entry(full: str, name: str) -> dict[str, Any]:
    info = os.lstat(full)
    kind = "dir" if stat.S_ISDIR(info.st_mode) else "file"
    return {"path": name, "type": kind, "size": info.st_size, "mtime": info.st_mtime}


def _write_file(path: str, data: bytes) -> None:
    partial = path + ".partial"
    with open(partial, "wb") as out:
        out.write(data)
    os.replace(partial, path)


def _read_file(path: str) -> bytes:
    with open(path, "rb") as source:
        return source.read()
