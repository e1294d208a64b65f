"""Commands run inside a container beside its inputs (``shoal container exec``).

The control plane sends an :class:`~shoal.protocol.messages.Exec`; the command starts as
a child of the container, so it is isolated as the container is (its jail, seccomp
filter, limits and network), with the container's environment and working directory
and no stdin. What it writes goes back as it comes, in
:class:`~shoal.protocol.messages.ExecOutput` chunks, and its end as an
:class:`~shoal.protocol.messages.ExecDone`. It stays in the container's process group, so
whatever ends the container ends it too; its timeout, or the container's shutdown, kills
it and every process it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Callable

from shoal.protocol.messages import Exec, ExecDone, ExecOutput, Message

#: Bytes read from a command's pipe at a time.
_CHUNK = 64 * 1024
#: The code of a command its timeout ended (as a sandbox's exec), or not started.
TIMED_OUT = -1
NOT_STARTED = 127


class Commands:
    """The commands running in this container."""

    def __init__(self, send: Callable[[Message], None]) -> None:
        self._send = send
        self._running: dict[int, asyncio.Task[None]] = {}
        self._pids: dict[int, int] = {}

    def start(self, message: Exec) -> None:
        task = asyncio.get_running_loop().create_task(self._run(message))
        self._running[message.exec_id] = task
        task.add_done_callback(lambda _: self._running.pop(message.exec_id, None))

    async def _run(self, message: Exec) -> None:
        ident = message.exec_id
        try:
            argv = [str(arg) for arg in message.argv]
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except (OSError, ValueError) as exc:
            self._send(ExecOutput(ident, 2, f"{exc}\n".encode()))
            self._send(ExecDone(ident, NOT_STARTED))
            return
        self._pids[ident] = process.pid
        assert process.stdout is not None and process.stderr is not None
        pumps = asyncio.gather(
            self._pump(ident, 1, process.stdout), self._pump(ident, 2, process.stderr)
        )
        code = TIMED_OUT
        try:
            code = await asyncio.wait_for(process.wait(), max(0.001, float(message.timeout)))
        except TimeoutError:
            note = f"[shoal: its timeout of {message.timeout:g} s ended the command]\n"
            self._send(ExecOutput(ident, 2, note.encode()))
        finally:
            self._end(ident)  # what it left running goes with it
            await process.wait()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pumps, 1.0)
            self._send(ExecDone(ident, code))

    async def _pump(self, ident: int, fd: int, pipe: asyncio.StreamReader) -> None:
        while chunk := await pipe.read(_CHUNK):
            self._send(ExecOutput(ident, fd, chunk))

    def _end(self, ident: int) -> None:
        """SIGKILL command ``ident`` (not reaped yet, so its pid is still its own) and
        every process it started."""
        pid = self._pids.pop(ident, None)
        if pid is None:
            return
        for found in [*_descendants(pid), pid]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(found, signal.SIGKILL)

    def close(self) -> None:
        """End every command (the container is going)."""
        for ident in list(self._pids):
            self._end(ident)
        for task in list(self._running.values()):
            task.cancel()


def _descendants(root: int) -> list[int]:
    """The processes descended from ``root``, from /proc (children before their parents)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as stat:
                    parent = int(stat.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found: list[int] = []
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found[::-1]
