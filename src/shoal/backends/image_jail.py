"""An image build's commands (``run_commands``, ``run_function``) run in a jail.

Where the images built are isolated ones (an isolated server's functions, and every
sandbox's), a build's commands are code of the app, so they run as its containers do
(:mod:`shoal.backends.isolation`): namespaces, seccomp, no_new_privs, the host's ``/usr``
read-only. What differs is what they may write. The jail's ``/`` is the image's own file
tree (its ``fs/`` folder), writable, so a command that writes anywhere (``mkdir /srv``,
``useradd``'s ``/etc/passwd``, a home under ``/home``) writes into the image and never
onto the host; the image's folder (its environment) is writable at its own path, and its
``root/`` (Modal's ``/root``, where containers start) at ``/root`` too. With a root
server, root inside keeps the capabilities a build needs to own files for other users
(``chown``; see :data:`isolation.USER_CAPS`), and the image's ``/etc`` starts with a
jail's accounts (:func:`isolation.seed_accounts`). A jail of the built image then sees
what the build made: :func:`tree`, and the account files.

Outbound network goes through the user-space stack where installed (downloads), never to
the host's loopback; a command starts once it is up. Without a network stack a step has
its own loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence

from shoal import settings
from shoal.backends import cgroups, isolation, netstack, seccomp

#: Bytes /tmp may hold, the largest file a step may write (wheels, model weights).
_TMP_BYTES = 8 * 1024**3
_FILE_BYTES = 64 * 1024**3
#: The prefix of each build step's private folder, before the server's pid.
_PRIVATE = "shoal-build-"
#: Processes a build step may hold at once (a fork bomb stops there; memory is not capped:
#: builds differ too much), through a cgroup where one is writable.
_PIDS = 4096
_numbers = itertools.count(1)


def prepare(fs: str) -> None:
    """Start a new image's file tree ``fs`` (its build jails' ``/``): the /etc and /home
    a jail of it uses."""
    isolation.seed_accounts(os.path.join(fs, "etc"))
    os.makedirs(os.path.join(fs, "home"), exist_ok=True)


async def run(
    argv: Sequence[str],
    *,
    folder: str,
    fs: str,
    workdir: str,
    env: dict[str, str],
    read_only: Sequence[str],
    writable: Sequence[tuple[str, str]],
    stdin: bytes | None,
    on_line: Callable[[bytes], None],
) -> int:
    """Run ``argv`` in a build jail of the image in ``folder``: its file tree ``fs`` is
    the jail's ``/``; ``folder`` and ``workdir`` are writable at their own paths and
    ``writable`` (host folder, path inside) where said; ``read_only`` host folders are
    bound at their own paths, less the server's home. It reads ``stdin``; each line it
    prints goes to ``on_line``. Returns its exit code.

    Raises:
        OSError: the jail could not start.
    """
    jail = await asyncio.to_thread(_jail, folder, fs, workdir, env, read_only, writable)
    # The command waits for a line on a pipe, written once its network is up.
    go_read, go_write = os.pipe()
    gated = ["/bin/sh", "-c", f'read -r _ < /proc/self/fd/{go_read}; exec "$@"', "sh", *argv]
    try:
        private, group, line, passed, info_read = await asyncio.to_thread(_command, jail, gated)
    except BaseException:
        os.close(go_read)
        os.close(go_write)
        raise
    passed.append(go_read)
    link: netstack.Link | None = None
    proc: asyncio.subprocess.Process | None = None
    try:
        proc = await asyncio.create_subprocess_exec(
            *line,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=passed,
            start_new_session=True,
        )
        for fd in passed:
            os.close(fd)
        passed = []
        if jail.network:
            info, info_read = info_read, -1
            try:
                link = await netstack.attach(await isolation.jail_pid(info, "the build step"))
            except OSError as exc:  # bubblewrap failed: what it said tells why
                assert proc.stdout is not None
                said = await proc.stdout.read(4096)
                raise OSError(f"{exc}: {said.decode(errors='replace').strip()}") from None
        os.write(go_write, b"go\n")
        return await talk(proc, stdin, on_line)
    except BaseException:
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            await proc.wait()
        raise
    finally:
        os.close(go_write)
        for fd in [*passed, info_read]:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if link is not None:
            await link.close()
        if group is not None:
            await asyncio.to_thread(group.remove)
        shutil.rmtree(private, ignore_errors=True)


async def talk(
    proc: asyncio.subprocess.Process, stdin: bytes | None, on_line: Callable[[bytes], None]
) -> int:
    """Write ``stdin`` to a build command (started with a pipe for it when not None), hand
    each line of its output to ``on_line``, and return its exit code."""
    assert proc.stdout is not None
    if stdin is not None and proc.stdin is not None:
        proc.stdin.write(stdin)
        await proc.stdin.drain()
        proc.stdin.close()
    async for raw in proc.stdout:
        on_line(raw)
    return await proc.wait()


def _command(
    jail: isolation.Jail, argv: Sequence[str]
) -> tuple[str, cgroups.Group | None, list[str], list[int], int]:
    """A build step's private folder, cgroup (None: none writable here), command line,
    the descriptors it inherits and the pipe bubblewrap says its pid on (-1: none,
    without a network to join)."""
    isolation.sweep_folders(_PRIVATE)
    private = isolation.private_folder(_PRIVATE)
    group = None
    if cgroups.version():  # named as a pool's are: a sweep removes it if this process dies
        name = f"pool-{os.getpid()}-build{next(_numbers)}"
        group = cgroups.Group(name, cgroups.Limits(pids=_PIDS))
    read_end, write_end = os.pipe()
    os.write(write_end, seccomp.program())  # under a kilobyte: the pipe holds it
    os.close(write_end)
    info_read, info_write = os.pipe() if jail.network else (-1, -1)
    userns = isolation.user_namespace() if jail.users else None
    info = info_write if jail.network else None
    line = isolation.command(jail, argv, private, read_end, group, info, userns)
    passed = [fd for fd in (read_end, info_write, userns) if fd is not None and fd >= 0]
    return private, group, line, passed, info_read


def _jail(
    folder: str,
    fs: str,
    workdir: str,
    env: dict[str, str],
    read_only: Sequence[str],
    writable: Sequence[tuple[str, str]],
) -> isolation.Jail:
    home = os.path.realpath(settings.home())
    ro = [
        (os.path.realpath(path), path)
        for path in read_only
        if os.path.exists(path) and not isolation.within(os.path.realpath(path), home)
    ]
    rw = [(folder, folder), *writable]
    if not isolation.within(workdir, folder):
        rw.append((workdir, workdir))
    users = not isolation.users_problem()
    return isolation.Jail(
        ro=tuple(ro),
        rw=tuple(rw),
        hidden=tuple(h for h in (home,) if any(isolation.within(h, host) for host, _ in ro + rw)),
        workdir=workdir,
        tmp_bytes=_TMP_BYTES,
        file_bytes=_FILE_BYTES,
        network=not netstack.problem(),
        hostname="build",
        env=tuple(env.items()),
        users=users,
        root=fs,
    )


#: Top-level folders of an image's file tree that a jail makes itself, or binds apart.
_MADE_BY_JAIL = frozenset(
    "usr bin sbin lib lib32 lib64 libx32 proc dev tmp etc run root home".split()
)


def tree(fs: str) -> list[tuple[str, str]]:
    """The folders a jailed build wrote to an image's file tree ``fs`` (``mkdir /srv``,
    ``/opt/tool``...), as (host folder, path inside) for a jail of that image to bind
    read-only; ``/home`` is not among them (each jail binds it its own way)."""
    found = []
    with contextlib.suppress(OSError):
        for entry in sorted(os.scandir(fs), key=lambda e: e.name):
            if entry.name not in _MADE_BY_JAIL and entry.is_dir(follow_symlinks=False):
                found.append((entry.path, "/" + entry.name))
    return found
