"""Runs inputs of one function: on worker threads (sync) or as asyncio tasks (async).

The per-input lifecycle is the same for both and reads top to bottom in
:func:`run_sync_input` and :meth:`TaskExecutor._run`: take a slot, unpickle the
arguments, call, pickle the return value (or the exception), send the output.
Only the call differs: an async function is awaited on the container's loop,
under its timeout; a sync one runs on one of ``max_inputs`` long-lived worker
threads, which also pickle and send the output themselves, so a finished input
costs no hop through the loop.

A thread cannot be stopped. When a sync input passes its timeout, the loop
reports it as TIMEOUT with ``stuck=True`` (the control plane then replaces the
container once its other inputs finish) and drops whatever the thread returns
later. A cancelled sync input runs to its end and is then reported CANCELLED,
so its slot is not given away while its thread still runs.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import heapq
import inspect
import queue
import threading
from collections.abc import Callable
from typing import Any

from shoal.container.context import current_input
from shoal.container.slots import Slots
from shoal.protocol import payload
from shoal.protocol.messages import Input, Output, OutputStatus


def is_async_callable(obj: Any) -> bool:
    """Whether calling ``obj`` returns a coroutine, looking through partials and
    callable objects (``functools.partial(async_fn)``, an instance with ``async def __call__``).
    """
    while isinstance(obj, functools.partial):
        obj = obj.func
    if inspect.iscoroutinefunction(obj):
        return True
    call = getattr(obj, "__call__", None)  # noqa: B004 - callable objects, not callability
    return call is not None and not inspect.isfunction(obj) and inspect.iscoroutinefunction(call)


def _failure(input_id: str, exc: BaseException) -> Output:
    return Output(input_id, OutputStatus.ERROR, payload.dump_exception(exc), False)


def run_sync_input(fn: Callable[..., Any], message: Input) -> Output:
    """One input of a sync function, start to finish, on the calling thread."""
    current_input.set(message.input_id)
    try:
        args, kwargs = payload.loads(message.args, "arguments")
        data = payload.dumps(fn(*args, **kwargs), "return value")
    except BaseException as exc:  # the user's error, whatever it is, goes to the caller
        return _failure(message.input_id, exc)
    finally:
        current_input.set(None)
    return Output(message.input_id, OutputStatus.OK, data, False)


class Executor(abc.ABC):
    """What the runtime needs of an executor; see :func:`make_executor`."""

    slots: Slots

    @abc.abstractmethod
    def submit(self, message: Input) -> None:
        """Start running ``message``; its output is sent when it ends."""

    @abc.abstractmethod
    def cancel(self, input_id: str) -> None:
        """Stop ``input_id`` if it can be stopped; report it CANCELLED either way."""

    @abc.abstractmethod
    async def drain(self) -> None:
        """Return when no input is running."""


def make_executor(
    fn: Callable[..., Any], max_inputs: int, timeout: float, send: Callable[[Output], None]
) -> Executor:
    """A task executor for an async function, a thread executor for a sync one."""
    if is_async_callable(fn):
        return TaskExecutor(fn, max_inputs, timeout, send)
    return ThreadExecutor(fn, max_inputs, timeout, send)


class TaskExecutor(Executor):
    """Runs each input of an async function as a task on the container's loop."""

    def __init__(
        self,
        fn: Callable[..., Any],
        max_inputs: int,
        timeout: float,
        send: Callable[[Output], None],
    ) -> None:
        self._fn = fn
        self._timeout = timeout
        self._send = send
        self.slots = Slots(max_inputs)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, message: Input) -> None:
        self._idle.clear()
        task = asyncio.get_running_loop().create_task(self._run(message))
        self._tasks[message.input_id] = task
        task.add_done_callback(lambda _: self._forget(message.input_id))

    def cancel(self, input_id: str) -> None:
        task = self._tasks.get(input_id)
        if task is not None:
            task.cancel()

    async def drain(self) -> None:
        await self._idle.wait()

    def _forget(self, input_id: str) -> None:
        self._tasks.pop(input_id, None)
        if not self._tasks:
            self._idle.set()

    async def _run(self, message: Input) -> None:
        input_id = message.input_id
        try:
            await self.slots.acquire()
        except asyncio.CancelledError:
            self._send(Output(input_id, OutputStatus.CANCELLED, b"", False))
            return
        current_input.set(input_id)
        try:
            args, kwargs = payload.loads(message.args, "arguments")
            async with asyncio.timeout(self._timeout) as deadline:
                data = payload.dumps(await self._fn(*args, **kwargs), "return value")
            output = Output(input_id, OutputStatus.OK, data, False)
        except asyncio.CancelledError:
            output = Output(input_id, OutputStatus.CANCELLED, b"", False)
        except TimeoutError as exc:
            expired = deadline.expired()
            output = (
                Output(input_id, OutputStatus.TIMEOUT, b"", False)
                if expired
                else _failure(input_id, exc)
            )
        except BaseException as exc:  # the user's error, whatever it is, goes to the caller
            output = _failure(input_id, exc)
        finally:
            self.slots.release()
        self._send(output)


class ThreadExecutor(Executor):
    """Runs each input of a sync function on one of ``max_inputs`` worker threads.

    Inputs wait in a queue for a free worker; workers start as load needs them.
    Timeouts are kept on the loop in one heap with one timer for the earliest.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        max_inputs: int,
        timeout: float,
        send: Callable[[Output], None],
    ) -> None:
        self._fn = fn
        self._timeout = timeout
        self._send = send
        self.slots = Slots(max_inputs)
        self._loop = asyncio.get_running_loop()
        self._inbox: queue.SimpleQueue[Input] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers = 0
        self._idle_workers = 0
        #: Inputs submitted and not yet reported, by id.
        self._open: set[str] = set()
        self._cancelled: set[str] = set()
        self._deadlines: list[tuple[float, str]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._drained: asyncio.Event | None = None

    def submit(self, message: Input) -> None:
        with self._lock:
            self._open.add(message.input_id)
            start_worker = self._idle_workers <= 0 and self._workers < self.slots.capacity
            if start_worker:
                self._workers += 1
            else:
                self._idle_workers -= 1  # below zero: waits in the inbox for a worker
        if start_worker:
            threading.Thread(target=self._work, name="shoal-input", daemon=True).start()
        self._inbox.put(message)
        self._watch(self._loop.time() + self._timeout, message.input_id)

    def cancel(self, input_id: str) -> None:
        with self._lock:
            if input_id in self._open:
                self._cancelled.add(input_id)

    async def drain(self) -> None:
        with self._lock:
            if not self._open:
                return
            self._drained = asyncio.Event()
        await self._drained.wait()

    def _work(self) -> None:
        while True:
            message = self._inbox.get()
            # Never fails: there are at most capacity workers.
            self.slots.try_acquire()
            output = run_sync_input(self._fn, message)
            self.slots.release()
            self._report(output)
            with self._lock:
                self._idle_workers += 1

    def _report(self, output: Output, *, timed_out: bool = False) -> None:
        """Send ``output`` unless the input was already reported (safe from any thread)."""
        input_id = output.input_id
        with self._lock:
            if input_id not in self._open:
                return  # timed out earlier; the late result is dropped
            self._open.discard(input_id)
            if input_id in self._cancelled:
                self._cancelled.discard(input_id)
                output = Output(input_id, OutputStatus.CANCELLED, b"", timed_out)
            drained = self._drained if not self._open else None
        self._send(output)
        if drained is not None:
            self._loop.call_soon_threadsafe(drained.set)

    def _watch(self, deadline: float, input_id: str) -> None:
        heapq.heappush(self._deadlines, (deadline, input_id))
        if len(self._deadlines) > 2 * len(self._open) + 64:
            self._prune()
        if self._timer is None or deadline < self._timer.when():
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        now = self._loop.time()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, input_id = heapq.heappop(self._deadlines)
            timeout = Output(input_id, OutputStatus.TIMEOUT, b"", True)
            self._report(timeout, timed_out=True)
        self._prune()
        if self._deadlines:
            self._timer = self._loop.call_at(self._deadlines[0][0], self._expire)

    def _prune(self) -> None:
        """Forget the deadlines of inputs already reported (amortised O(1) per input)."""
        with self._lock:
            self._deadlines = [(d, i) for d, i in self._deadlines if i in self._open]
        heapq.heapify(self._deadlines)
