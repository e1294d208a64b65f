"""The container's main loop: connect, load the function, run inputs, exit.

The runtime connects to the control plane over a plain non-blocking socket (read
on the loop, written through a :class:`~shoal.protocol.framing.SocketWriter` that
worker threads may use directly), or, to a ``tls://`` address, over an asyncio TLS
connection that checks the control plane's certificate (``SHOAL_CONTROL_CERT``)
before anything is sent; it proves itself with the token, loads the
function named by the ``Load`` it is sent, and from then on hands every ``Input``
to the executor. It exits when told to shut down (after its inputs finish) or at
once when the connection closes: a container never outlives its control plane.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import time
import traceback
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from shoal import bridge, context, settings
from shoal.container import batching, bundles
from shoal.container.commands import Commands
from shoal.container.executors import Executor, is_async_callable
from shoal.container.user_code import LoadError, UserCode, load_user_code
from shoal.container.user_loop import UserLoop
from shoal.protocol import transport
from shoal.protocol.framing import FRAME_OVERHEAD, FrameParser, SocketWriter, TransportWriter
from shoal.protocol.messages import (
    Accepted,
    CallDone,
    CallItem,
    Cancel,
    Credit,
    Exec,
    Feed,
    Hello,
    Input,
    Load,
    LoadFailed,
    Many,
    Message,
    ProtocolError,
    Ready,
    Reply,
    Report,
    Shutdown,
)

T = TypeVar("T")

#: Bytes read from the control plane's socket at a time.
_READ_SIZE = 256 * 1024
#: Seconds between a container's reports (see Runtime._report), and its loop's ticks.
REPORT_EVERY = 2.0
_TICK = 0.1


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
        #: Where async user code runs, once it is loaded (see container.user_loop);
        #: None while it is not, or when the code has no async part (then: this loop).
        self._user: UserLoop | None = None
        self._code: UserCode | None = None
        self._sock: socket.socket | None = None
        self._writer: SocketWriter | TransportWriter | None = None
        self._parser = FrameParser(settings.max_payload_bytes() + FRAME_OVERHEAD)
        self._exit_code: asyncio.Future[int] | None = None
        self._background: set[asyncio.Task[None]] = set()
        #: Commands run beside its inputs (``shoal container exec``).
        self._commands: Commands | None = None

    async def run(self) -> int:
        """Serve until told to stop or disconnected; return the exit code.

        Raises:
            OSError: the control plane cannot be reached.
        """
        loop = asyncio.get_running_loop()
        self._exit_code = loop.create_future()
        kind, host, port = transport.parse(self._address)
        if kind == "tls":
            return await self._run_tls(loop, host, port)
        sock = transport.connect(self._address)
        sock.setblocking(False)
        self._sock = sock
        self._writer = SocketWriter(sock, loop)
        loop.add_reader(sock.fileno(), self._on_readable)
        try:
            return await self._serve()
        finally:
            loop.remove_reader(sock.fileno())
            self._writer.close()
            sock.close()

    async def _run_tls(self, loop: asyncio.AbstractEventLoop, host: str, port: int) -> int:
        tls = transport.pinned_tls(os.environ.get("SHOAL_CONTROL_CERT", ""))
        link, _ = await loop.create_connection(
            lambda: _TlsLink(self._on_data, lambda: self._finish(0)), host, port, ssl=tls
        )
        self._writer = TransportWriter(link, loop)
        try:
            return await self._serve()
        finally:
            self._writer.close()

    async def _serve(self) -> int:
        assert self._writer is not None and self._exit_code is not None
        context.install_channel(context.CallChannel(self._writer.send))
        self._writer.send(Hello(self._container_id, self._token, os.getpid()))
        return await self._exit_code

    def _on_readable(self) -> None:
        assert self._sock is not None
        try:
            data = self._sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        self._on_data(data)

    def _on_data(self, data: bytes) -> None:
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

    def _on_many(self, message: Many) -> None:
        """Inputs dispatched together, or outcomes of this container's own calls that
        ended together."""
        executor, channel = self._executor, context.channel()
        if message.of(Input):
            if executor is not None:
                self._to_user(executor.submit_many, message.each())
        elif channel is not None:
            for reply in message.each():
                if isinstance(reply, CallDone | Accepted):
                    channel.deliver(reply)

    def _on_message(self, message: Message) -> None:
        if isinstance(message, Many):
            self._on_many(message)
        elif isinstance(message, Input | Credit | Feed | Cancel):
            self._to_executor(message)
        elif isinstance(message, CallItem | CallDone | Accepted):
            channel = context.channel()
            if channel is not None:
                channel.deliver(message)
        elif isinstance(message, Reply):
            channel = context.channel()
            if channel is not None:
                channel.deliver_reply(message)
        elif isinstance(message, Load):
            self._load(message)
        elif isinstance(message, Exec) and self._writer is not None:
            if self._commands is None:
                self._commands = Commands(self._writer.send)
            self._commands.start(message)
        elif isinstance(message, Shutdown):
            task = asyncio.get_running_loop().create_task(self._shutdown())
            self._background.add(task)
        else:
            self._finish(2)  # a message out of order: the peer is broken

    def _to_executor(self, message: Input | Credit | Feed | Cancel) -> None:
        """An input, or what its caller sends it; before the code is loaded, out of order."""
        executor = self._executor
        if executor is None:
            self._finish(2)
        elif isinstance(message, Input):
            self._to_user(executor.submit, message)
        elif isinstance(message, Credit):
            self._to_user(executor.credit, message.input_id, message.amount)
        elif isinstance(message, Feed):
            self._to_user(executor.feed, message.input_id, message.data)
        else:
            self._to_user(executor.cancel, message.input_id)

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
        try:
            message = await bundles.located(message)  # fetched first if not on this machine
            # On a thread of its own, so the module's top-level code may make blocking Shoal
            # calls (a Dict filled at import, as Modal allows): they run on this loop,
            # which stays free to carry them.
            code = await asyncio.to_thread(load_user_code, message)
            if _runs_async(code):  # its own loop, which Shoal's handles there use too
                self._user = UserLoop()
                bridge.use_loop(self._user.loop, blocking_elsewhere=True)
            entering = time.perf_counter()
            for hook in code.enter:
                await self._on_user_loop(_call(hook))
            entered = time.perf_counter() - entering
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

        async def make() -> Executor:  # on the loop its tasks and timers will live on
            return Executor(code, message.max_inputs, message.timeout, send)

        self._executor = await self._on_user_loop(make())
        context.set_input_concurrency(message.max_inputs)
        self._writer.send(Ready(entered))
        reporting = asyncio.get_running_loop().create_task(self._report(self._executor))
        self._background.add(reporting)

    async def _report(self, executor: Executor) -> None:
        """Every REPORT_EVERY seconds, tell the control plane the batches run and how late
        this loop woke meanwhile; nothing while no input ran (an idle container is quiet)."""
        loop = asyncio.get_running_loop()
        lag = 0.0
        seen = executor.inputs_started
        due = loop.time()
        while True:
            for _ in range(round(REPORT_EVERY / _TICK)):
                due += _TICK
                await asyncio.sleep(max(0.0, due - loop.time()))
                lag = max(lag, loop.time() - due)
                if lag > 5.0:
                    due = loop.time()  # stalled long: start the schedule again
            sizes = batching.take_sizes()
            started = executor.inputs_started
            if (sizes or started != seen) and self._writer is not None:
                self._writer.send(Report(sizes, lag))
            seen, lag = started, 0.0

    async def _on_user_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` where user code runs: the user loop, or this one (sync code)."""
        return await (self._user.run(coro) if self._user is not None else coro)

    def _to_user(self, fn: Callable[..., Any], *args: Any) -> None:
        """Call ``fn(*args)`` where user code runs (see :meth:`_on_user_loop`)."""
        if self._user is not None:
            self._user.call(fn, *args)
        else:
            fn(*args)

    async def _shutdown(self) -> None:
        """Finish running inputs, run the exit hooks (within the grace), and stop."""
        if self._executor is not None:
            await self._on_user_loop(self._executor.drain())
        if self._code is not None:
            for hook in self._code.exit:
                try:
                    await self._on_user_loop(_call(hook))
                except Exception:  # an exit hook's failure is reported, not fatal
                    traceback.print_exc()
        self._finish(0)

    def _finish(self, code: int) -> None:
        if self._commands is not None:
            self._commands.close()
        if self._exit_code is not None and not self._exit_code.done():
            self._exit_code.set_result(code)


class _TlsLink(asyncio.Protocol):
    """A TLS connection's bytes to the runtime; its end ends the container."""

    def __init__(self, on_data: Callable[[bytes], None], on_lost: Callable[[], None]) -> None:
        self._on_data = on_data
        self._on_lost = on_lost

    def data_received(self, data: bytes) -> None:
        self._on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost()


def _runs_async(code: UserCode) -> bool:
    """Whether ``code`` has async parts (methods, a web app, hooks) for a user loop."""
    parts = [*code.methods.values(), *code.enter, *code.exit]
    return bool(code.web) or any(is_async_callable(part) for part in parts)


async def _call(hook: Callable[[], Any]) -> None:
    """Run a lifecycle hook, sync or async (a sync one on a thread, off the loop)."""
    if inspect.iscoroutinefunction(hook):
        await hook()
    else:
        await asyncio.to_thread(hook)
