"""The container's main loop: connect, load the function, run inputs, exit.

The runtime connects to the control plane, proves itself with the token, loads
the function named by the ``Load`` it is sent, and from then on hands every
``Input`` to the :class:`~shoal.container.executors.Executor`. It exits when told
to shut down (after its inputs finish) or at once when the connection closes: a
container never outlives its control plane.
"""

from __future__ import annotations

import asyncio
import os
import traceback

from shoal import settings
from shoal.container.executors import Executor
from shoal.container.user_code import LoadError, load_function
from shoal.protocol.framing import FRAME_OVERHEAD, FramedProtocol
from shoal.protocol.messages import (
    Cancel,
    Hello,
    Input,
    Load,
    LoadFailed,
    Message,
    Ready,
    Shutdown,
)


class Runtime:
    """One container's conversation with its control plane."""

    def __init__(self, address: str, container_id: str, token: str) -> None:
        self._address = address
        self._container_id = container_id
        self._token = token
        self._executor: Executor | None = None
        self._conn: FramedProtocol | None = None
        self._exit_code: asyncio.Future[int] | None = None
        self._background: set[asyncio.Task[None]] = set()

    async def run(self) -> int:
        """Serve until told to stop or disconnected; return the exit code."""
        loop = asyncio.get_running_loop()
        self._exit_code = loop.create_future()
        max_frame = settings.max_payload_bytes() + FRAME_OVERHEAD
        _, self._conn = await loop.create_unix_connection(
            lambda: FramedProtocol(self._on_message, self._on_lost, max_frame), self._address
        )
        self._conn.send(Hello(self._container_id, self._token, os.getpid()))
        return await self._exit_code

    def _on_message(self, message: Message) -> None:
        if isinstance(message, Input) and self._executor is not None:
            self._executor.submit(message)
        elif isinstance(message, Cancel) and self._executor is not None:
            self._executor.cancel(message.input_id)
        elif isinstance(message, Load):
            self._load(message)
        elif isinstance(message, Shutdown):
            task = asyncio.get_running_loop().create_task(self._shutdown())
            self._background.add(task)
        else:
            self._finish(2)  # a message out of order: the peer is broken

    def _load(self, message: Load) -> None:
        assert self._conn is not None
        try:
            fn = load_function(message)
        except LoadError as exc:
            self._conn.send(LoadFailed(str(exc), ""))
            self._finish(1)
            return
        except BaseException as exc:  # the user's module failed to import: report it whole
            text = "".join(traceback.format_exception(exc))
            self._conn.send(LoadFailed(f"{type(exc).__name__}: {exc}", text))
            self._finish(1)
            return
        self._executor = Executor(fn, message.max_inputs, message.timeout, self._conn.send)
        self._conn.send(Ready())

    async def _shutdown(self) -> None:
        if self._executor is not None:
            await self._executor.drain()
        self._finish(0)

    def _on_lost(self, exc: BaseException | None) -> None:
        self._finish(0 if exc is None else 1)

    def _finish(self, code: int) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._exit_code is not None and not self._exit_code.done():
            self._exit_code.set_result(code)
