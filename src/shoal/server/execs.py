"""Commands run in function containers (``shoal container exec``), kept for their client.

The control plane sends a running container the command (``ControlPlane.exec_in``); the
container runs it as its own child, isolated as the container is, and sends its output
back as it comes. Here each command's stdout and stderr wait for the client that reads
them, in the bounded buffers a sandbox's commands use (past them output is dropped with
a marker, never held up); ended commands are forgotten after :data:`KEEP` seconds, or
when more than :data:`MOST` are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from typing import Any

from shoal.control.server import ControlPlane
from shoal.exception import NotFoundError
from shoal.server.sandboxes import Stream, buffer_bytes

#: Seconds a command may run when its caller names no timeout.
TIMEOUT = 600.0
#: Seconds an ended command's output is kept for its reader.
KEEP = 600.0
#: Commands kept at most (the oldest ended ones go first).
MOST = 100


class ContainerExec:
    """One command in one container."""

    def __init__(self, container_id: str) -> None:
        self.exec_id = "ex-" + secrets.token_hex(8)
        self.container_id = container_id
        cap = buffer_bytes()
        self.streams = {1: Stream(cap), 2: Stream(cap)}
        #: Its exit code; None while it runs, and after it if the container went first.
        self.code: int | None = None
        self.ended = asyncio.Event()
        self.ended_at = 0.0

    def output(self, fd: int, data: bytes) -> None:
        self.streams[fd].add(data)

    def done(self, code: int | None) -> None:
        self.code = code
        if code is None:
            self.streams[2].add(b"[shoal: the container ended before the command did]\n")
        for stream in self.streams.values():
            stream.end()
        self.ended_at = time.monotonic()
        self.ended.set()


class Execs:
    """The commands of ``shoal container exec`` on this server."""

    def __init__(self, control: ControlPlane) -> None:
        self._control = control
        self._execs: dict[str, ContainerExec] = {}

    def start(self, container_id: str, argv: list[str], timeout: float) -> ContainerExec:
        """Run ``argv`` in container ``container_id``.

        Raises:
            NotFoundError: no such container is running.
        """
        self._forget_old()
        command = ContainerExec(container_id)
        self._control.exec_in(container_id, argv, timeout, command.output, command.done)
        self._execs[command.exec_id] = command
        return command

    def get(self, exec_id: str) -> ContainerExec:
        """Raises: NotFoundError: no such command is kept."""
        found = self._execs.get(exec_id)
        if found is None:
            raise NotFoundError(f"no command {exec_id!r} (it ended long ago, or never ran)")
        return found

    def _forget_old(self) -> None:
        now = time.monotonic()
        ended = [c for c in self._execs.values() if c.ended.is_set()]
        for command in ended:
            if now - command.ended_at > KEEP:
                del self._execs[command.exec_id]
        ended = sorted((c for c in ended if c.exec_id in self._execs), key=lambda c: c.ended_at)
        while len(self._execs) >= MOST and ended:
            del self._execs[ended.pop(0).exec_id]


async def wait_for(command: ContainerExec, wait: float) -> dict[str, Any]:
    """Its code once it ended (waiting up to ``wait`` seconds); ``ended`` says whether."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(command.ended.wait(), wait)
    return {"ended": command.ended.is_set(), "code": command.code}
