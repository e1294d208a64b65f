"""Containers as child processes of this machine: the embedded default backend.

Each container is ``python -m shoal.container`` in a session of its own (so a
Ctrl-C at the terminal reaches the caller, not every container), unbuffered, with
stdout and stderr piped back and printed line by line with the container's label.
A container exits by itself when its control plane's connection closes or its
parent process dies, so none outlives the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from typing import IO, TextIO

from shoal.backends.base import Backend, ContainerLaunch, OnExit

#: Bytes read from a container's pipe at a time.
_CHUNK = 64 * 1024
#: Seconds a dead container's remaining output may take to arrive.
_DRAIN = 1.0


class LocalBackend(Backend):
    """Runs each container as a child process.

    Exit is seen through a pidfd on the event loop (a waiting thread where pidfds
    are missing), not asyncio's child watcher, whose threads race with other
    reapers and print warnings when the interpreter exits.
    """

    def __init__(self) -> None:
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._exited: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, launch: ContainerLaunch, on_exit: OnExit) -> int | None:
        env = dict(os.environ)
        env["SHOAL_CONTAINER_TOKEN"] = launch.token
        env["PYTHONUNBUFFERED"] = "1"
        # A fork and exec take milliseconds; asyncio's subprocess API adds a watcher.
        proc = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", "shoal.container", launch.address, launch.container_id],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        self._procs[launch.container_id] = proc
        self._exited[launch.container_id] = asyncio.Event()
        task = asyncio.create_task(self._supervise(launch, proc, on_exit))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return proc.pid

    async def _supervise(
        self, launch: ContainerLaunch, proc: subprocess.Popen[bytes], on_exit: OnExit
    ) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        code: int | None = None
        relays = asyncio.gather(
            _relay(proc.stdout, launch.label, "stdout"),
            _relay(proc.stderr, launch.label, "stderr"),
        )
        try:
            code = await _exit_code(proc)
            # Let the last lines through, unless a grandchild still holds the pipes.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(relays), _DRAIN)
        finally:
            relays.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relays
            self._procs.pop(launch.container_id, None)
            self._exited.pop(launch.container_id).set()
        on_exit(launch.container_id, code)

    async def stop(self, container_id: str, grace: float) -> None:
        proc = self._procs.get(container_id)
        exited = self._exited.get(container_id)
        if proc is None or exited is None:
            return
        if grace > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(exited.wait(), grace)
        if not exited.is_set():
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await exited.wait()

    def list(self) -> list[str]:
        return list(self._procs)


async def _exit_code(proc: subprocess.Popen[bytes]) -> int:
    """Wait for ``proc`` to exit without blocking the loop; return its exit code."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux >= 5.3
        return await asyncio.to_thread(proc.wait)
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await exited
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return proc.wait()


async def _relay(pipe: IO[bytes], label: str, which: str) -> None:
    """Copy ``pipe`` to our stdout or stderr, each line prefixed with ``label``; return at EOF."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_CHUNK, loop=loop)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader, loop=loop), pipe
    )
    pending = b""
    try:
        while chunk := await reader.read(_CHUNK):
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            _write(label, which, lines)
        if pending:
            _write(label, which, [pending])
    finally:
        transport.close()


def _write(label: str, which: str, lines: list[bytes]) -> None:
    # Looked up per write: a live terminal display may have replaced sys.stdout.
    out: TextIO = sys.stdout if which == "stdout" else sys.stderr
    text = "".join(f"[{label}] {line.decode(errors='replace')}\n" for line in lines)
    with contextlib.suppress(ValueError, OSError):  # closed at interpreter exit
        out.write(text)
        out.flush()
