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
import inspect
import os
import socket
import traceback
from collections.abc import Callable
from typing import Any

from shoal import settings
from shoal.container import context
from shoal.container.executors import Executor
from shoal.container.user_code import LoadError, UserCode, load_user_code
from shoal.container.user_loop import UserLoop
from shoal.protocol import transport
from shoal.protocol.framing import FRAME_OVERHEAD, FrameParser, SocketWriter
from shoal.protocol.messages import (
    Accepted,
    CallDone,
    CallItem,
    Cancel,
    Credit,
    Feed,
    Hello,
    Input,
    Load,
    LoadFailed,
    Message,
    ProtocolError,
    Ready,
    Reply,
    Shutdown,
)

#: Bytes read from the control plane's socket at a time.
_READ_SIZE = 256 * 1024


class Runtime:
    """One container's conversation with its control plane."""

    def __init__(self, address: str, container_id: str, token: str, setup_error: str = "") -> None:
        #: Why the container could not be set up before it connected (its volumes),
        #: reported instead of loading the user's code.
        self._setup_error = setup_error
        self._address = address
        self._container_id = container_id
        self._token = token
        self._executor: Executor | None = None
        #: Where user code runs, once it is loaded (see container.user_loop).
        self._user: UserLoop | None = None
        self._code: UserCode | None = None
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
        sock = transport.connect(self._address)
        sock.setblocking(False)
        self._sock = sock
        self._writer = SocketWriter(sock, loop)
        context.install_channel(context.CallChannel(self._writer.send))
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
        user, executor = self._user, self._executor
        if isinstance(message, Input) and executor is not None and user is not None:
            user.call(executor.submit, message)
        elif isinstance(message, CallItem | CallDone | Accepted):
            channel = context.channel()
            if channel is not None:
                channel.deliver(message)
        elif isinstance(message, Reply):
            channel = context.channel()
            if channel is not None:
                channel.deliver_reply(message)
        elif isinstance(message, Credit) and executor is not None and user is not None:
            user.call(executor.credit, message.input_id, message.amount)
        elif isinstance(message, Feed) and executor is not None and user is not None:
            user.call(executor.feed, message.input_id, message.data)
        elif isinstance(message, Cancel) and executor is not None and user is not None:
            user.call(executor.cancel, message.input_id)
        elif isinstance(message, Load):
            self._load(message)
        elif isinstance(message, Shutdown):
            task = asyncio.get_running_loop().create_task(self._shutdown())
            self._background.add(task)
        else:
            self._finish(2)  # a message out of order: the peer is broken

    def _load(self, message: Load) -> None:
        task = asyncio.get_running_loop().create_task(self._start(message))
        self._background.add(task)

    async def _start(self, message: Load) -> None:
        """Load the user's code, run its enter hooks, then take inputs."""
        assert self._writer is not None
        if self._setup_error:
            self._writer.send(LoadFailed(self._setup_error, ""))
            self._finish(1)
            return
        user = self._user = UserLoop()
        try:
            code = load_user_code(message)
            for hook in code.enter:
                await user.run(_call(hook))
        except LoadError as exc:
            self._writer.send(LoadFailed(str(exc), ""))
            self._finish(1)
            return
        except BaseException as exc:  # the user's import or enter hook failed: report it whole
            text = "".join(traceback.format_exception(exc))
            self._writer.send(LoadFailed(f"{type(exc).__name__}: {exc}", text))
            self._finish(1)
            return
        self._code = code
        send = self._writer.send

        async def make() -> Executor:  # on the user loop: its tasks and timers live there
            return Executor(code, message.max_inputs, message.timeout, send)

        self._executor = await user.run(make())
        self._writer.send(Ready())

    async def _shutdown(self) -> None:
        """Finish running inputs, run the exit hooks (within the grace), and stop."""
        user = self._user
        if self._executor is not None and user is not None:
            await user.run(self._executor.drain())
        if self._code is not None and user is not None:
            for hook in self._code.exit:
                try:
                    await user.run(_call(hook))
                except Exception:  # an exit hook's failure is reported, not fatal
                    traceback.print_exc()
        self._finish(0)

    def _finish(self, code: int) -> None:
        if self._exit_code is not None and not self._exit_code.done():
            self._exit_code.set_result(code)


async def _call(hook: Callable[[], Any]) -> None:
    """Run a lifecycle hook, sync or async (a sync one on a thread, off the loop)."""
    if inspect.iscoroutinefunction(hook):
        await hook()
    else:
        await asyncio.to_thread(hook)
