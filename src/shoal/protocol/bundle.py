"""Code bundles: an app's source files as one deterministic zip archive.

The deploying client packs its app's file and the local modules it imports
(paths relative to the app's folder); the server stores the archive by its
SHA-256 and unpacks it once per content. The same files give the same bytes
(sorted names, a fixed timestamp), so redeploying unchanged code stores nothing
new. Unpacking refuses absolute names and names that climb out of the target.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from typing import Final

from shoal.exception import InvalidError

#: Every member's timestamp: bundles of the same files are the same bytes.
_EPOCH: Final = (1980, 1, 1, 0, 0, 0)
#: The most a bundle may hold, unpacked (bytes).
MAX_UNPACKED: Final = 256 * 1024 * 1024


def pack(files: Mapping[str, str]) -> bytes:
    """Zip ``files`` (archive name -> file on disk) into bundle bytes."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, _EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with open(files[name], "rb") as source:
                archive.writestr(info, source.read())
    return out.getvalue()


def unpack(data: bytes, root: str) -> None:
    """Unpack bundle ``data`` into the new folder ``root`` (atomically: it appears whole).

    Raises:
        InvalidError: the bytes are not a bundle, a name is unsafe, or it is too large.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise InvalidError(f"not a code bundle: {exc}") from None
    total = 0
    with archive:
        members = archive.infolist()
        for member in members:
            name = member.filename
            parts = name.split("/")
            if name.startswith("/") or ".." in parts or "\\" in name or not name:
                raise InvalidError(f"code bundle holds an unsafe path {name!r}")
            total += member.file_size
        if total > MAX_UNPACKED:
            raise InvalidError(f"code bundle unpacks to {total} bytes, over {MAX_UNPACKED}")
        parent = os.path.dirname(root)
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".unpack-", dir=parent)
        try:
            archive.extractall(staging)
            os.rename(staging, root)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not os.path.isdir(root):  # another unpack of the same bundle won the race
                raise


def folder(cache: str, digest: str) -> str:
    """Where bundle ``digest`` is unpacked in a machine's bundle ``cache``."""
    return os.path.join(cache, digest[:32])


def find(cache: str, digest: str) -> str | None:
    """The folder of bundle ``digest`` when it is unpacked in ``cache`` (one stat)."""
    root = folder(cache, digest)
    return root if os.path.isdir(root) else None


def install(cache: str, digest: str, data: bytes) -> str:
    """Unpack ``data``, fetched as bundle ``digest``, into ``cache`` unless it is there
    already; return its folder.

    Raises:
        InvalidError: ``data`` is not the bundle ``digest`` names (its SHA-256 differs),
            or not a bundle at all.
    """
    if hashlib.sha256(data).hexdigest() != digest:
        raise InvalidError(f"the bytes fetched as code bundle {digest[:12]} are not that bundle")
    root = folder(cache, digest)
    if not os.path.isdir(root):
        unpack(data, root)
    return root
