"""Volumes at the paths the user wrote, in a mount namespace of the container's own.

A container with volumes (``SHOAL_VOLUMES``: a JSON map of path in the container
to folder on the host) leaves the host's mount namespace before anything else
runs, so what it mounts is seen by it alone and vanishes with it. To put a volume
at a path that does not exist on the host (``/data``) without creating anything
there, the container gets a new root: a tmpfs holding, for each entry of the
host's ``/``, that entry bound from the host, plus the folders the mount points
need. Along a mount point's path, every folder that exists on the host is
*mirrored* the same way (a tmpfs with its entries bound in), so a missing folder is
created in the tmpfs, never on the host. The container then ``chroot``\\ s into the
new root and returns to its working directory.

Root may make a mount namespace directly; anyone else needs unprivileged user
namespaces, in which case the container runs as root of its own user namespace
mapped to the caller's uid. Where neither is possible :func:`apply` raises with
the fix.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
from typing import Final

_CLONE_NEWNS: Final = 0x00020000
_CLONE_NEWUSER: Final = 0x10000000
_MS_RDONLY: Final = 0x1
_MS_BIND: Final = 0x1000
_MS_REC: Final = 0x4000
_MS_PRIVATE: Final = 0x40000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class MountError(OSError):
    """Raised when the container cannot give its volumes their paths."""


def apply(spec: str, new_root: str) -> None:
    """Mount the volumes of ``spec`` (``SHOAL_VOLUMES``'s JSON) at their paths, in a new
    root built at ``new_root`` (an empty folder, created here; in the host's view it
    stays an empty folder, removed with the control plane's private directory).

    Must run before the process starts a thread (a mount namespace is per process).

    Raises:
        MountError: no mount namespace can be made here, or a mount failed; the
            message says why and what would fix it.
    """
    volumes: dict[str, str] = json.loads(spec)
    if not volumes:
        return
    os.makedirs(new_root, mode=0o700)
    _private_namespace()
    cwd = os.getcwd()
    _mount("tmpfs", new_root, "tmpfs", 0)
    _mirror("/", new_root)
    for target in sorted(volumes, key=len):  # parents before children
        _bind_volume(volumes[target], target, new_root)
    os.chroot(new_root)
    os.chdir(cwd if os.path.isdir(cwd) else "/")


def _private_namespace() -> None:
    uid, gid = os.getuid(), os.getgid()
    if _libc.unshare(_CLONE_NEWNS) != 0:
        first = ctypes.get_errno()
        if _libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNS) != 0:
            raise MountError(
                first,
                "volumes need a mount namespace of the container's own, and this process "
                f"may not make one ({os.strerror(first)}): run Shoal as root, or allow "
                "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, "
                "or kernel.apparmor_restrict_unprivileged_userns=0 on Ubuntu)",
            )
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"0 {uid} 1")
        _write("/proc/self/gid_map", f"0 {gid} 1")
    _mount("none", "/", None, _MS_REC | _MS_PRIVATE)  # nothing we do leaks to the host


def _mirror(host_dir: str, copy: str) -> None:
    """Fill the empty tmpfs folder ``copy`` with ``host_dir``'s entries, each bound."""
    for name in os.listdir(host_dir):
        source = os.path.join(host_dir, name)
        target = os.path.join(copy, name)
        if os.path.islink(source):
            os.symlink(os.readlink(source), target)
        elif os.path.isdir(source):
            os.mkdir(target)
            _mount(source, target, None, _MS_BIND | _MS_REC)
        else:
            open(target, "w").close()  # a file (or device, socket): bound onto an empty file
            _mount(source, target, None, _MS_BIND | _MS_REC)


def _bind_volume(folder: str, target: str, new_root: str) -> None:
    """Bind ``folder`` at ``target`` in the new root, mirroring existing folders on its way."""
    parts = [p for p in os.path.normpath(target).split("/") if p]
    host, inside = "/", new_root
    for depth, part in enumerate(parts):
        host, inside = os.path.join(host, part), os.path.join(inside, part)
        last = depth == len(parts) - 1
        if os.path.isdir(host) and not os.path.islink(host) and not last:
            # On the host: replace its bind with a tmpfs mirror, so creating below it
            # writes to the tmpfs. (Mounts under it are bound again by the mirror.)
            _unmount_tree(inside)
            _mount("tmpfs", inside, "tmpfs", 0)
            _mirror(host, inside)
        elif not os.path.exists(inside):
            os.mkdir(inside)
    _mount(folder, inside, None, _MS_BIND | _MS_REC)


def _unmount_tree(path: str) -> None:
    if _libc.umount2(path.encode(), 2) != 0:  # MNT_DETACH: with whatever is below it
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # EINVAL: not a mount point
            raise MountError(err, f"unmount {path}: {os.strerror(err)}")


def _mount(source: str, target: str, fstype: str | None, flags: int) -> None:
    result = _libc.mount(
        source.encode(), target.encode(), fstype.encode() if fstype else None, flags, None
    )
    if result != 0:
        err = ctypes.get_errno()
        raise MountError(err, f"mount {source} at {target}: {os.strerror(err)}")


def _write(path: str, text: str) -> None:
    with open(path, "w") as out:
        out.write(text)
