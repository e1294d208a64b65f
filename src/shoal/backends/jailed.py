"""Function containers in jails: what an isolated container process sees, and starting it.

With isolation on (``shoal server`` by default where bubblewrap works; ``SHOAL_ISOLATION``
or ``--isolation``), the local backend starts each fork server, and each container it
starts as a fresh interpreter, inside a jail of :mod:`shoal.backends.isolation`. A
forked container is born inside its fork server's jail: the fork server pays the jail's
start once, and a container still starts in milliseconds. So the containers of one
function (one preload: its app version's module and image) share a jail, its ``/tmp``
and its process namespace, as they share a module; containers of other functions,
other apps and the host are out of reach.

What a container's jail holds, beside the jail's own root of the host's ``/usr``:

- the interpreter it runs on, read-only: the image's environment and its folder (the files
  the image added; its working directory, read-only in a jail: a container writes to
  ``/tmp``), or the server's own interpreter and the folders Shoal and its dependencies are
  imported from;
- its code bundle alone, read-only, in a bundle cache of its own (a tmpfs where the
  container may unpack what it fetches), and, for a function defined in a file rather
  than a bundle (the embedded server), the folders of its import path, read-only;
- the control plane's Unix socket (its token is the container's own), its volumes
  where declared, and the GPUs it was given;
- never the server's home (its token, store and other apps' bundles): hidden even where
  a bind above would hold it.

Containers reach their control plane over its Unix socket only; outbound network goes
through a user-space stack (:mod:`shoal.backends.netstack`) where one is installed, so
the host's loopback services are never reachable from inside.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import glob
import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shoal import settings
from shoal.backends import cgroups, image_jail, isolation, netstack, seccomp
from shoal.protocol import bundle, transport
from shoal.spec.image import Environment

#: The bundle cache a jailed container sees (a tmpfs, with its own bundle bound in).
BUNDLES = "/.shoal/bundles"
#: Processes one jail may hold: a fork bomb stops there (its containers' threads count).
PIDS = 4096
#: The folder the ``shoal`` package is imported from.
_PACKAGES = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: Folders never bound whole, though an import path names them.
_NEVER = frozenset(("/", "/tmp", "/etc", "/var", "/run", "/proc", "/sys", "/dev", "/home"))
#: Where GPUs' device files live (bound into a jail when the host has them).
_GPU_DEVICES = ("/dev/nvidia*", "/dev/dri")


@dataclass(eq=False)
class Jailed:
    """One jailed process being started: its command line, and what it leaves to end."""

    line: list[str]
    #: Descriptors the process must inherit (the seccomp program, bwrap's info pipe).
    pass_fds: tuple[int, ...]
    private: str
    group: cgroups.Group | None
    info_read: int = -1
    link: netstack.Link | None = None
    _closed: bool = field(default=False, repr=False)

    def started(self) -> None:
        """Close this process's copies of what the jail inherited."""
        for fd in self.pass_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.pass_fds = ()

    async def attach(self) -> None:
        """Join the jail's network to the outside (when it has one), once bubblewrap has
        said which process holds it.

        Raises:
            OSError: the jail ended first, or the network stack failed.
        """
        if self.info_read < 0:
            return
        info, self.info_read = self.info_read, -1
        self.link = await netstack.attach(await isolation.jail_pid(info, "the container's jail"))

    def close(self) -> None:
        """End what the jail left behind: its network, its cgroup, its private folder
        (call it once its process has exited)."""
        if self._closed:
            return
        self._closed = True
        _live.discard(self)
        self.started()
        if self.info_read >= 0:
            os.close(self.info_read)
            self.info_read = -1
        if self.link is not None:
            self.link.close_now()
        if self.group is not None:
            self.group.remove(0.5)
        shutil.rmtree(self.private, ignore_errors=True)


def socket_path(address: str) -> str:
    """The Unix socket a jailed container reaches its control plane at.

    Raises:
        OSError: ``address`` is not a Unix socket (a jail has no route to the host's TCP).
    """
    kind, where, _ = transport.parse(address)
    if kind != "unix":
        raise OSError(
            f"isolated containers reach their control plane over a Unix socket, not {address!r}"
            " (unset SHOAL_CONTAINER_TRANSPORT, or turn isolation off)"
        )
    return where


def interpreter_binds(image: Environment | None) -> list[str]:
    """The folders a container's interpreter and its imports come from (host paths)."""
    if image is not None:  # its environment, and its own folder (files added, its workdir)
        root = os.path.dirname(os.path.dirname(image.python))
        base = os.path.dirname(os.path.dirname(os.path.realpath(image.python)))
        found = [root, base, *image.sys_path, *([image.workdir] if image.workdir else [])]
    else:
        found = [sys.base_prefix, sys.prefix]
    # Shoal itself (an editable install imports it from its source tree) and whatever
    # this interpreter imports from outside its prefix.
    found.append(_PACKAGES)
    if image is None:  # where this interpreter's packages are installed, and no other folder
        found += [p for p in sys.path if _a_package_folder(p)]
    return found


def _a_package_folder(path: str) -> bool:
    """Whether import path entry ``path`` holds installed packages (a ``site-packages``
    folder, or one inside the interpreter's prefixes), not a working folder that
    happened to be on the path (the folder a server was started in)."""
    if not path.startswith("/") or not os.path.isdir(path):
        return False
    parts = path.split(os.sep)
    if "site-packages" in parts or "dist-packages" in parts:
        return True
    return any(isolation.within(path, prefix) for prefix in (sys.prefix, sys.base_prefix))


def container_jail(
    *,
    image: Environment | None,
    address: str,
    env: dict[str, str],
    code_paths: Iterable[str] = (),
    code_files: Iterable[str] = (),
    bundles: dict[str, str] | None = None,
    volumes: dict[str, str] | None = None,
    gpus: bool = False,
    network: bool = True,
    limits: cgroups.Limits | None = None,
) -> isolation.Jail:
    """The jail of a container process (a fork server or a fresh interpreter).

    ``code_paths`` are host folders the user's code is imported from (bound read-only
    at their own paths, unless too broad: then only ``code_files``, its module's file,
    is bound), ``bundles`` maps bundle digests to their host folders (bound
    under :data:`BUNDLES`), ``volumes`` maps paths inside to host folders (writable);
    ``limits`` are its cgroup's (default: :data:`PIDS` processes).
    """
    home = os.path.realpath(settings.home())
    ro = []
    for path in _outermost([*interpreter_binds(image), *code_paths]):
        real = os.path.realpath(path)
        if isolation.within(real, home) or real in _NEVER:
            continue  # never the server's home, nor the host's whole root or state
        ro.append((real, path))
    for file in code_files:
        real = os.path.realpath(file)
        if os.path.isfile(real) and not isolation.within(real, home):
            if not any(isolation.within(real, host) for host, _ in ro):
                ro.append((real, os.path.abspath(file)))
    # A bind that holds the home or the client's profile (its token), as a project folder
    # that is the user's home would, hides them.
    secret = [home, os.path.realpath(settings.config_file())]
    hidden = [
        path
        for path in secret
        if os.path.exists(path) and any(isolation.within(path, host) for host, _ in ro)
    ]
    for digest, root in (bundles or {}).items():
        ro.append((root, bundle.folder(BUNDLES, digest)))
    sock = socket_path(address)
    ro.append((sock, sock))
    rw = [(host, inside) for inside, host in (volumes or {}).items()]
    devices: list[str] = []
    if gpus:
        for pattern in _GPU_DEVICES:
            devices += [d for d in sorted(glob.glob(pattern)) if os.path.exists(d)]
    environment = dict(env)
    environment.update({"HOME": "/root", "SHOAL_BUNDLE_CACHE": BUNDLES, "TMPDIR": "/tmp"})
    environment.pop("SHOAL_VOLUMES", None)  # bound by the jail, not mounted by the container
    workdir = image.workdir if image is not None and image.workdir else "/root"
    accounts = image.accounts if image is not None else None
    if accounts is not None:  # what a jailed build made: /opt/tool, /srv, users' homes
        fs = os.path.dirname(accounts)
        ro += [*image_jail.tree(fs), (os.path.join(fs, "home"), "/home")]
    return isolation.Jail(
        ro=tuple(ro),
        rw=tuple(rw),
        hidden=tuple(hidden),
        tmpfs=(BUNDLES,),
        devices=tuple(devices),
        workdir=workdir,
        network=network and not netstack.problem(),
        hostname="container",
        env=tuple(environment.items()),
        limits=limits or cgroups.Limits(pids=PIDS),
        accounts=accounts,
    )


def limits_of(cpu: float | None, memory_mib: int | None, pids: int | None = None) -> cgroups.Limits:
    """A container's cgroup limits: its function's CPU and memory limits, and ``pids``."""
    memory = None if memory_mib is None else memory_mib * 1024 * 1024
    return cgroups.Limits(memory=memory, pids=pids, cpu=cpu)


def group_for(pid: int, limits: cgroups.Limits) -> cgroups.Group | None:
    """A cgroup of ``limits`` holding process ``pid`` (a container forked in its fork
    server's jail, moved out of the jail's group into one of its own); None where no
    cgroup is writable.

    Raises:
        OSError: the process could not be moved (it exited already).
    """
    if not cgroups.version():
        return None
    _sweep_once()
    group = cgroups.Group(f"pool-{os.getpid()}-c{next(_numbers)}", limits)
    try:
        for procs in group.procs:
            with open(procs, "w") as out:
                out.write(str(pid))
    except OSError:
        group.remove(0)
        raise
    return group


def _outermost(paths: Sequence[str]) -> list[str]:
    """``paths`` without duplicates or paths inside another of them (absolute, existing)."""
    found = sorted({os.path.abspath(p) for p in paths if p and os.path.isdir(p)})
    kept: list[str] = []
    for path in found:
        if not any(isolation.within(path, outer) for outer in kept):
            kept.append(path)
    return kept


def prepare(jail: isolation.Jail, argv: Sequence[str]) -> Jailed:
    """Everything to start ``argv`` in ``jail``: the command line, a private folder, the
    seccomp program in a pipe, a cgroup where one is writable, and the pipe bubblewrap
    tells the jail's pid on (when it has a network to join)."""
    _sweep_once()
    private = isolation.private_folder(_PRIVATE)
    group = None
    try:
        if cgroups.version():
            # Named as a pool's are, so a sweep after this process dies removes it.
            group = cgroups.Group(f"pool-{os.getpid()}-jail{next(_numbers)}", jail.limits)
        info_read, info_write = os.pipe() if jail.network else (-1, -1)
        read_end, write_end = os.pipe()
        os.write(write_end, seccomp.program())  # under a kilobyte: the pipe holds it
        os.close(write_end)
        info = info_write if jail.network else None
        line = isolation.command(jail, argv, private, read_end, group, info)
    except BaseException:
        if group is not None:
            group.remove(0)
        shutil.rmtree(private, ignore_errors=True)
        raise
    passed = (read_end, info_write) if jail.network else (read_end,)
    made = Jailed(line, passed, private, group, info_read)
    _live.add(made)
    return made


#: The prefix of each jail's private folder, before its process's pid.
_PRIVATE = "shoal-jail-"
#: Jails of this process not yet ended (ended at its exit, if it gets to run its exit).
_live: set[Jailed] = set()
_numbers = itertools.count(1)


@functools.cache
def _sweep_once() -> None:
    """Remove the groups and folders that jails of dead processes left (once per process),
    and end this process's own at its exit."""
    cgroups.sweep()
    isolation.sweep_folders(_PRIVATE)
    atexit.register(_end_all)


def _end_all() -> None:
    for jail in list(_live):
        jail.close()


def popen(
    jail: Jailed | None,
    argv: list[str],
    cwd: str | None,
    pass_fds: Sequence[int] = (),
    **options: Any,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in ``cwd`` or, with ``jail`` (:func:`prepare`d for that ``argv``),
    the jail's command line, which starts it in the jail's own working folder, with the
    jail's descriptors beside ``pass_fds``. A jail whose start failed is ended; this
    process's copies of what the jail inherited are closed either way."""
    if jail is None:
        return subprocess.Popen(argv, cwd=cwd, pass_fds=pass_fds, **options)
    try:
        return subprocess.Popen(jail.line, pass_fds=[*pass_fds, *jail.pass_fds], **options)
    except BaseException:
        jail.close()
        raise
    finally:
        jail.started()


def host_pid(pidfd: int) -> int:
    """The pid, in this process's namespace, of the process ``pidfd`` refers to (a jailed
    fork server knows its children only by the pids of its own namespace)."""
    with open(f"/proc/self/fdinfo/{pidfd}") as info:
        for line in info:
            if line.startswith("Pid:"):
                return int(line.split()[1])
    raise OSError("the kernel does not say a pidfd's pid (Linux 5.3 or newer needed)")
