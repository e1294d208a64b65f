"""Runs inputs inside a container: async callables as tasks, sync ones on worker threads.

The per-input lifecycle is the same on both paths and reads top to bottom in
:meth:`Executor._run_task` and :meth:`Executor._run_on_thread`: unpickle the
arguments, call (iterating a generator, each value sent as it is yielded),
pickle the return value or the exception, then :meth:`Executor._finish`, which
releases the input's slot and sends its output. Only the call differs: an async
callable is awaited on the container's loop under its timeout; a sync one runs
on one of ``max_inputs`` long-lived worker threads. The last running input's
output is sent at once (from a worker: no hop through the loop); outputs of inputs
that end while others run are gathered and leave together, as one batch (``Many``).
``@shoal.batched`` callables go through a :class:`~shoal.container.batching.Batcher`
instead.

A thread cannot be stopped. When a sync input passes its timeout, the loop
reports it as TIMEOUT with ``stuck=True`` (the control plane then replaces the
container once its other inputs finish) and drops whatever the thread returns
later. A cancelled sync input runs to its end and is then reported CANCELLED.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import queue
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from shoal.container.batching import Batcher, failure
from shoal.container.slots import Slots
from shoal.container.user_code import UserCode
from shoal.container.web import Stream, serve_request
from shoal.context import enter_input
from shoal.deadlines import DeadlineHeap
from shoal.protocol import markers, payload
from shoal.protocol.framing import batches
from shoal.protocol.messages import Credit, Input, Item, Many, Output, OutputStatus, batch

#: A job for a worker thread.
Job = Callable[[], None]


class Sender(Protocol):
    """Delivers a message to the control plane, from any thread."""

    def __call__(self, message: Output | Many | Item | Credit) -> None: ...


def _unwrap_partials(obj: Any) -> Any:
    while isinstance(obj, functools.partial):
        obj = obj.func
    return obj


def is_async_callable(obj: Any) -> bool:
    """Whether calling ``obj`` returns a coroutine or an async iterator, looking through
    partials and callable objects (``functools.partial(async_fn)``, an instance with
    ``async def __call__``)."""
    obj = _unwrap_partials(obj)
    if inspect.iscoroutinefunction(obj) or inspect.isasyncgenfunction(obj):
        return True
    call = getattr(obj, "__call__", None)  # noqa: B004 - callable objects, not callability
    return call is not None and not inspect.isfunction(obj) and inspect.iscoroutinefunction(call)


def _is_generator(obj: Any) -> bool:
    obj = _unwrap_partials(obj)
    return inspect.isgeneratorfunction(obj) or inspect.isasyncgenfunction(obj)


@dataclass
class Runner:
    """How one callable of the container runs."""

    fn: Callable[..., Any]
    is_async: bool
    is_generator: bool
    batcher: Batcher | None = None
    web: bool = False  # an ASGI app: each input is one request


def _outputs(outputs: list[Output]) -> Output | Many:
    """One message for ``outputs``: the Output for one, a batch of them for several."""
    if len(outputs) == 1:
        return outputs[0]
    return batch(
        Output,
        [o.input_id for o in outputs],
        [o.status for o in outputs],
        [o.data for o in outputs],
        [o.stuck for o in outputs],
    )


class Executor:
    """Runs the inputs of one container's user code.

    Args:
        code: the callables, by method name (``""`` for a function).
        max_inputs: inputs that may run at once.
        timeout: seconds each input may run.
        send: delivers a message to the control plane (safe from any thread).
    """

    def __init__(
        self,
        code: UserCode,
        max_inputs: int,
        timeout: float,
        send: Sender,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout
        self._send = send
        self.slots = Slots(max_inputs, self._loop)
        #: Inputs taken so far (the container reports only after some ran).
        self.inputs_started = 0
        self._lock = threading.Lock()
        self._open: set[str] = set()  # inputs submitted and not yet reported
        #: Outputs of inputs that ended while others ran, to leave together (see _finish).
        self._outbox: list[Output] = []
        self._cancelled: set[str] = set()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._drained: asyncio.Event | None = None
        self._inbox: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._workers = 0
        self._idle_workers = 0
        #: Thread inputs until their timeout (an async input's task has its own).
        self._deadlines: DeadlineHeap[str] = DeadlineHeap(
            self._expire, self._open.__contains__, self._loop
        )
        self._streams: dict[str, Stream] = {}
        self._runners = {name: self._runner(fn) for name, fn in code.methods.items()}
        for name in code.web:
            self._runners[name] = Runner(
                code.methods[name], is_async=True, is_generator=False, web=True
            )

    def _runner(self, fn: Callable[..., Any]) -> Runner:
        runner = Runner(fn, is_async_callable(fn), _is_generator(fn))
        batched = getattr(fn, markers.BATCHED, None)
        if batched is not None:
            size, wait_ms = batched
            runner.batcher = Batcher(
                fn, size, wait_ms, runner.is_async, self._finish, self._hand_off
            )
        return runner

    # -- the runtime's side ------------------------------------------------

    def submit(self, message: Input) -> None:
        """Start running ``message``; its output is sent when it ends."""
        with self._lock:
            self._open.add(message.input_id)
        self.inputs_started += 1
        runner = self._runners.get(message.method)
        if runner is None:
            error = AttributeError(f"no method {message.method!r} here")
            self._finish(failure(message.input_id, error), slot=False)
        elif self.slots.try_acquire():
            self._start(runner, message)
        else:  # only if the control plane sent more than max_inputs: wait for a slot
            self._track(message.input_id, self._admit(runner, message))

    def submit_many(self, messages: list[Input]) -> None:
        """:meth:`submit` each of ``messages`` (a batch's), in order."""
        for message in messages:
            self.submit(message)

    def feed(self, input_id: str, data: bytes) -> None:
        """Deliver an ASGI ``receive`` event to a running request."""
        stream = self._streams.get(input_id)
        if stream is not None:
            stream.incoming.put_nowait(payload.loads(data, "request event"))

    def credit(self, input_id: str, amount: int) -> None:
        """The caller took ``amount`` more bytes of a request's response body."""
        stream = self._streams.get(input_id)
        if stream is not None:
            stream.credit(amount)

    def cancel(self, input_id: str) -> None:
        """Stop ``input_id``: cancel its task, or drop its thread's result when it ends."""
        with self._lock:
            if input_id not in self._open:
                return
            self._cancelled.add(input_id)
        task = self._tasks.get(input_id)
        if task is not None:
            task.cancel()

    async def drain(self) -> None:
        """Return when no input is running."""
        with self._lock:
            if not self._open:
                return
            self._drained = asyncio.Event()
        await self._drained.wait()

    # -- starting ----------------------------------------------------------

    async def _admit(self, runner: Runner, message: Input) -> None:
        await self.slots.acquire()
        self._start(runner, message)

    def _start(self, runner: Runner, message: Input) -> None:
        if runner.batcher is not None:
            runner.batcher.add(message)
        elif runner.web:
            self._track(message.input_id, self._run_request(runner, message))
        elif runner.is_async:
            self._track(message.input_id, self._run_task(runner, message))
        else:
            self._hand_off(functools.partial(self._run_on_thread, runner, message))
            deadline = self._loop.time() + self._timeout
            self._deadlines.watch(message.input_id, deadline, len(self._open))

    def _track(self, input_id: str, coro: Any) -> None:
        task = self._loop.create_task(coro)
        self._tasks[input_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(input_id, None))

    def _hand_off(self, job: Job) -> None:
        """Give ``job`` to a worker thread, starting one if none is idle (up to max_inputs)."""
        with self._lock:
            start = self._idle_workers <= 0 and self._workers < self.slots.capacity
            if start:
                self._workers += 1
            else:
                self._idle_workers -= 1  # below zero: waits in the inbox for a worker
        if start:
            threading.Thread(target=self._work, name="shoal-input", daemon=True).start()
        self._inbox.put(job)

    def _work(self) -> None:
        while True:
            self._inbox.get()()
            with self._lock:
                self._idle_workers += 1

    # -- running -----------------------------------------------------------

    async def _run_task(self, runner: Runner, message: Input) -> None:
        input_id = message.input_id

        async def call() -> bytes:
            args, kwargs = payload.loads(message.args, "arguments")
            if not runner.is_generator:
                return payload.dumps(await runner.fn(*args, **kwargs), "return value")
            async for value in runner.fn(*args, **kwargs):
                self._send(Item(input_id, payload.dumps(value, "yielded value")))
            return payload.dumps(None, "return value")

        await self._run_async(message, call)

    async def _run_request(self, runner: Runner, message: Input) -> None:
        """One HTTP request or websocket on the container's ASGI app (see container.web)."""
        input_id = message.input_id
        stream = self._streams[input_id] = Stream(
            lambda amount: self._send(Credit(input_id, amount))
        )

        def emit(data: bytes) -> None:
            self._send(Item(input_id, data))

        async def call() -> bytes:
            envelope = payload.loads(message.args, "request")
            await serve_request(runner.fn, envelope, stream, emit)
            return payload.dumps(None, "return value")

        try:
            await self._run_async(message, call)
        finally:
            self._streams.pop(input_id, None)

    async def _run_async(self, message: Input, call: Callable[[], Awaitable[bytes]]) -> None:
        """Await ``call`` under the timeout; report how it ended."""
        input_id = message.input_id
        enter_input(input_id, message.call_id)
        deadline = asyncio.timeout(self._timeout)
        try:
            async with deadline:
                data = await call()
            output = Output(input_id, OutputStatus.OK, data, False)
        except asyncio.CancelledError:
            output = Output(input_id, OutputStatus.CANCELLED, b"", False)
        except TimeoutError as exc:
            if deadline.expired():
                output = Output(input_id, OutputStatus.TIMEOUT, b"", False)
            else:
                output = failure(input_id, exc)
        except BaseException as exc:  # the user's error, whatever it is, goes to the caller
            output = failure(input_id, exc)
        self._finish(output)

    def _run_on_thread(self, runner: Runner, message: Input) -> None:
        input_id = message.input_id
        enter_input(input_id, message.call_id)
        try:
            args, kwargs = payload.loads(message.args, "arguments")
            result = runner.fn(*args, **kwargs)
            if runner.is_generator:
                for value in result:
                    self._send(Item(input_id, payload.dumps(value, "yielded value")))
                result = None
            output = Output(input_id, OutputStatus.OK, payload.dumps(result, "return value"), False)
        except BaseException as exc:  # the user's error, whatever it is, goes to the caller
            output = failure(input_id, exc)
        finally:
            enter_input(None)
        self._finish(output)

    def _finish(self, output: Output, *, slot: bool = True) -> None:
        """Release the input's slot and send its output, once (safe from any thread)."""
        input_id = output.input_id
        with self._lock:
            if input_id not in self._open:
                return  # timed out earlier; the late result is dropped
            self._open.discard(input_id)
            if input_id in self._cancelled:
                self._cancelled.discard(input_id)
                output = Output(input_id, OutputStatus.CANCELLED, b"", output.stuck)
            busy = len(self._open)
            drained = self._drained if not busy else None
        if slot:
            self.slots.release()  # before the output leaves: the next input finds it free
        if not busy:
            self._send(output)  # the last one running: at once
        else:  # with neighbours still running, more outputs follow soon: they leave together
            with self._lock:
                first = not self._outbox
                self._outbox.append(output)
            if first:
                self._loop.call_soon_threadsafe(self._send_outbox)
        if drained is not None:
            self._loop.call_soon_threadsafe(drained.set)

    def _send_outbox(self) -> None:
        """Send the outputs gathered since the last call (on the loop), batched as the
        frame limit allows."""
        with self._lock:
            outputs, self._outbox = self._outbox, []
        for start, end in batches([len(o.data) for o in outputs]):
            self._send(_outputs(outputs[start:end]))

    # -- timeouts of thread inputs -------------------------------------------

    def _expire(self, input_id: str) -> None:
        """A thread input outlived its timeout: report it (its thread cannot be stopped)."""
        self._finish(Output(input_id, OutputStatus.TIMEOUT, b"", True))
