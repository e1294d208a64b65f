"""The container's main loop: connect, load the function, run inputs, exit.

The runtime connects to the control plane over a plain non-blocking socket (read
on the loop, written through a :class:`~shoal.protocol.framing.SocketWriter` that
worker threads may use directly), proves itself with the token, loads the
function named by the ``Load`` it is sent, and from then on hands every ``Input``
to the executor. It exits when told to shut down (after its inputs finish) or at
once when the connection closes: a container never outlives its control plane.
"""

from __future__ import annotations

import asyncio
import os
import socket
import traceback

from shoal import settings
from shoal.container.executors import Executor, make_executor
from shoal.container.user_code import LoadError, load_function
from shoal.protocol.framing import FRAME_OVERHEAD, FrameParser, SocketWriter
from shoal.protocol.messages import (
    Cancel,
    Hello,
    Input,
    Load,
    LoadFailed,
    Message,
    ProtocolError,
    Ready,
    Shutdown,
)

#: Bytes read from the control plane's socket at a time.
_READ_SIZE = 256 * 1024


class Runtime:
    """One container's conversation with its control plane."""

    def __init__(self, address: str, container_id: str, token: str) -> None:
        self._address = address
        self._container_id = container_id
        self._token = token
        self._executor: Executor | None = None
        self._sock: socket.socket | None = None
        self._writer: SocketWriter | None = None
        self._parser = FrameParser(settings.max_payload_bytes() + FRAME_OVERHEAD)
        self._exit_code: asyncio.Future[int] | None = None
        self._background: set[asyncio.Task[None]] = set()

    async def run(self) -> int:
        """Serve until told to stop or disconnected; return the exit code.

        Raises:
            OSError: the control plane cannot be reached.
        """
        loop = asyncio.get_running_loop()
        self._exit_code = loop.create_future()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self._address)  # a local socket: connects at once or fails
        sock.setblocking(False)
        self._sock = sock
        self._writer = SocketWriter(sock, loop)
        loop.add_reader(sock.fileno(), self._on_readable)
        self._writer.send(Hello(self._container_id, self._token, os.getpid()))
        try:
            return await self._exit_code
        finally:
            loop.remove_reader(sock.fileno())
            self._writer.close()
            sock.close()

    def _on_readable(self) -> None:
        assert self._sock is not None
        try:
            data = self._sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._finish(0)  # the control plane is gone: so are we
            return
        try:
            messages = self._parser.feed(data)
        except ProtocolError:
            self._finish(2)
            return
        for message in messages:
            self._on_message(message)

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
        assert self._writer is not None
        try:
            fn = load_function(message)
        except LoadError as exc:
            self._writer.send(LoadFailed(str(exc), ""))
            self._finish(1)
            return
        except BaseException as exc:  # the user's module failed to import: report it whole
            text = "".join(traceback.format_exception(exc))
            self._writer.send(LoadFailed(f"{type(exc).__name__}: {exc}", text))
            self._finish(1)
            return
        writer = self._writer
        self._executor = make_executor(fn, message.max_inputs, message.timeout, writer.send)
        writer.send(Ready())

    async def _shutdown(self) -> None:
        if self._executor is not None:
            await self._executor.drain()
        self._finish(0)

    def _finish(self, code: int) -> None:
        if self._exit_code is not None and not self._exit_code.done():
            self._exit_code.set_result(code)
