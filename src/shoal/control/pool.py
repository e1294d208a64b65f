"""One function's pool: its queue, its containers, and the decisions that size it.

The pool is driven by events on the control plane's loop (an input arrives, an
output returns, a container becomes ready or dies, a timer fires). After each it
dispatches what it can (:mod:`~shoal.control.dispatcher`) and asks the pure
policy (:mod:`~shoal.control.autoscaler`) what to start and stop, then applies
the answer through the backend. Scale-up therefore happens on the very submit
that needs it.

Failure handling (DESIGN section 3) lives here too: a container that dies puts
its inputs back at the front of the queue (an infrastructure retry), a container
that cannot load the user's code fails every waiting input with that error, and
an input that outlives its timeout without an answer from the container is failed
here and its container killed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Final

from shoal import settings
from shoal.backends.base import Backend, ContainerLaunch
from shoal.control import dispatcher
from shoal.control.autoscaler import ContainerView, PoolSnapshot, decide
from shoal.control.calls import CallState, InputRecord, after_failure, describe
from shoal.control.containers import ContainerHandle, ContainerState
from shoal.control.input_queue import InputQueue
from shoal.control.spec import INFRA_RETRIES, CodeRef, FunctionSpec
from shoal.exception import (
    ContainerCrashError,
    ContainerInitError,
    ExecutionError,
    FunctionTimeoutError,
    InvalidError,
)
from shoal.protocol import payload
from shoal.protocol.framing import FramedProtocol
from shoal.protocol.messages import (
    Cancel,
    Input,
    Load,
    LoadFailed,
    Message,
    Output,
    OutputStatus,
    Ready,
    Shutdown,
)

#: Seconds past ``timeout`` the pool waits for a container's own timeout report
#: before it fails the input itself and kills the container.
TIMEOUT_GRACE: Final = 5.0
#: Containers in a row that exit before becoming ready before waiting inputs fail.
START_FAILURE_LIMIT: Final = 3
#: Seconds after a container failed to load the user's code during which new
#: inputs fail at once with the same error instead of starting more containers.
INIT_FAILURE_HOLD: Final = 5.0


@dataclass(frozen=True, slots=True)
class FunctionStats:
    """A snapshot of one function's pool.

    ``containers`` counts containers started and not yet stopped (starting,
    ready or draining); ``containers_started`` counts every container the pool
    ever started.
    """

    queued: int
    running: int
    containers: int
    ready: int
    containers_started: int

    @property
    def backlog(self) -> int:
        """Modal's name for inputs waiting for a container."""
        return self.queued

    @property
    def num_total_runners(self) -> int:
        """Modal's name for the number of containers."""
        return self.containers


#: Builds the launch description of a container from its id and label.
Launcher = Callable[[str, str], ContainerLaunch]


class Pool:
    """The queue, containers and autoscaling of one function."""

    def __init__(
        self,
        spec: FunctionSpec,
        code: CodeRef,
        backend: Backend,
        launcher: Launcher,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self._code = code
        self._backend = backend
        self._launcher = launcher
        self._clock = clock
        self._queue = InputQueue()
        self._delayed: set[InputRecord] = set()
        self._containers: dict[str, ContainerHandle] = {}
        self._in_flight = 0
        self._ids = itertools.count(1)
        self._container_numbers = itertools.count(1)
        self._started = 0
        self._start_failures = 0
        self._init_failure: tuple[float, ContainerInitError] | None = None
        self._recheck: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    # -- the caller's side -------------------------------------------------

    def submit(self, args: bytes, on_done: Callable[[InputRecord], None]) -> InputRecord:
        """Queue one input (``args`` already pickled) and scale for it.

        ``on_done`` is called once with the record when it reaches a final state.

        Raises:
            ExecutionError: the pool is stopped.
        """
        return self.submit_many([args], on_done)[0]

    def submit_many(
        self, many: Iterable[bytes], on_done: Callable[[InputRecord], None]
    ) -> list[InputRecord]:
        """Queue several inputs at once; one dispatch and one scaling decision for all."""
        if self._closed:
            raise ExecutionError(f"function {self.spec.name} is stopped; start the app again")
        records = [InputRecord(f"in-{next(self._ids)}", args, on_done) for args in many]
        held = self._held_init_failure()
        for record in records:
            if held is not None:
                record.fail(held)
            else:
                self._queue.push(record)
        self._pump()
        return records

    def cancel(self, record: InputRecord) -> None:
        """Cancel ``record``: dropped from the queue, or stopped in its container."""
        if record.done:
            return
        if record.state is CallState.QUEUED:
            if record in self._delayed:
                self._delayed.discard(record)
            else:
                self._queue.forget(record)
        elif record.container_id in self._containers:
            self._containers[record.container_id].send(Cancel(record.input_id))
        # A cancelled input keeps its slot until its container reports it stopped.
        record.move_to(CallState.CANCELLED)
        self._pump()

    def update_scaling(self, **changes: Any) -> None:
        """Replace scaling parameters while running; the new values apply at once.

        Raises:
            InvalidError: a new value is out of range (nothing changes then).
        """
        if "max_inputs" in changes or "target_inputs" in changes:
            raise InvalidError("max_inputs and target_inputs are fixed while the app runs")
        scaling = dataclasses.replace(self.spec.scaling, **changes)
        self.spec = dataclasses.replace(self.spec, scaling=scaling)
        self._pump()

    def stats(self) -> FunctionStats:
        """Counts of this pool right now."""
        containers = [c for c in self._containers.values() if c.state is not ContainerState.STOPPED]
        return FunctionStats(
            queued=len(self._queue) + len(self._delayed),
            running=self._in_flight,
            containers=len(containers),
            ready=sum(c.state is ContainerState.READY for c in containers),
            containers_started=self._started,
        )

    # -- dispatch and scaling ----------------------------------------------

    def _pump(self) -> None:
        self._dispatch()
        self._autoscale()

    def _dispatch(self) -> None:
        target = self.spec.scaling.target
        queue = self._queue
        while len(queue):
            container = dispatcher.pick(self._containers.values(), target)
            if container is None:
                return
            record = queue.pop()
            if record is None:
                return
            self._assign(record, container)

    def _assign(self, record: InputRecord, container: ContainerHandle) -> None:
        record.move_to(CallState.RUNNING)
        record.container_id = container.container_id
        container.running[record.input_id] = record
        container.idle_since = None
        self._in_flight += 1
        loop = asyncio.get_running_loop()
        record.timer = loop.call_later(self.spec.timeout + TIMEOUT_GRACE, self._on_deadline, record)
        container.send(Input(record.input_id, record.args))

    def _autoscale(self) -> None:
        if self._closed:
            return
        now = self._clock()
        live = [c for c in self._containers.values() if c.live]
        running = sum(len(c.running) for c in live)
        views = tuple(ContainerView(c.container_id, c.idle_since) for c in live)
        decision = decide(PoolSnapshot(now, len(self._queue), running, views, self.spec.scaling))
        for _ in range(decision.start):
            self._start_container()
        for container_id in decision.stop:
            self._retire(self._containers[container_id])
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        if decision.recheck_at is not None:
            delay = max(0.0, decision.recheck_at - now)
            self._recheck = asyncio.get_running_loop().call_later(delay, self._autoscale)

    def _start_container(self) -> None:
        number = next(self._container_numbers)
        container_id = f"{self.spec.name}-c{number}"
        handle = ContainerHandle(container_id, number, self.spec.scaling.max_inputs)
        self._containers[container_id] = handle
        self._started += 1
        self._spawn(self._launch(handle))

    async def _launch(self, handle: ContainerHandle) -> None:
        launch = self._launcher(handle.container_id, handle.container_id)
        try:
            handle.pid = await self._backend.start(launch, self._on_exit)
        except OSError as exc:
            self._container_gone(handle, f"could not be started ({exc})")

    def _retire(self, handle: ContainerHandle) -> None:
        """Take ``handle`` out of service; it stops once its inputs finish."""
        if handle.state in (ContainerState.STARTING, ContainerState.READY):
            handle.move_to(ContainerState.DRAINING)
        self._stop_if_drained(handle)

    def _stop_if_drained(self, handle: ContainerHandle) -> None:
        if handle.state is ContainerState.DRAINING and not handle.running:
            handle.send(Shutdown())
            self._spawn(self._backend.stop(handle.container_id, settings.shutdown_grace()))

    # -- the containers' side ----------------------------------------------

    def owns(self, container_id: str) -> bool:
        """Whether ``container_id`` is one of this pool's live containers."""
        return container_id in self._containers

    def attach(self, container_id: str, conn: FramedProtocol) -> ContainerHandle | None:
        """Bind a container's authenticated connection and tell it what to load.

        Returns ``None`` (the caller closes the connection) when the container is
        unknown, already connected, or no longer wanted.
        """
        handle = self._containers.get(container_id)
        if handle is None or handle.conn is not None or handle.state is not ContainerState.STARTING:
            return None
        handle.conn = conn
        code = self._code
        conn.send(
            Load(
                function_name=self.spec.name,
                module_kind=code.module_kind,
                module_name=code.module_name,
                module_file=code.module_file,
                sys_path=list(code.sys_path),
                qualname=code.qualname,
                serialized=code.serialized,
                max_inputs=handle.max_inputs,
                timeout=self.spec.timeout,
            )
        )
        return handle

    def on_message(self, handle: ContainerHandle, message: Message) -> None:
        """Handle one message from ``handle``'s container."""
        if isinstance(message, Output):
            self._on_output(handle, message)
        elif isinstance(message, Ready):
            self._on_ready(handle)
        elif isinstance(message, LoadFailed):
            self._on_load_failed(handle, message)
        else:
            self._kill(handle, f"sent an unexpected {type(message).__name__}")

    def on_disconnect(self, handle: ContainerHandle) -> None:
        """The container's connection closed: it is gone, whether or not it exited yet."""
        self._kill(handle, "disconnected")

    def _on_ready(self, handle: ContainerHandle) -> None:
        if handle.state is not ContainerState.STARTING:
            return
        handle.move_to(ContainerState.READY)
        handle.idle_since = self._clock()
        self._start_failures = 0
        self._init_failure = None
        self._pump()

    def _on_load_failed(self, handle: ContainerHandle, message: LoadFailed) -> None:
        detail = f"\n\n{message.traceback.rstrip()}" if message.traceback else ""
        error = ContainerInitError(
            f"container for {self.spec.name} could not load it: {message.message}{detail}"
        )
        self._init_failure = (self._clock(), error)
        if handle.state is ContainerState.STARTING:
            handle.move_to(ContainerState.DRAINING)
        self._fail_waiting(error)

    def _on_output(self, handle: ContainerHandle, message: Output) -> None:
        record = handle.running.pop(message.input_id, None)
        if record is None:
            return
        self._in_flight -= 1
        if not handle.running and handle.state is ContainerState.READY:
            handle.idle_since = self._clock()
        if message.stuck:
            self._retire(handle)
        else:
            self._stop_if_drained(handle)
        if not record.done:
            self._resolve(record, message)
        self._pump()

    def _resolve(self, record: InputRecord, message: Output) -> None:
        status = message.status
        if status == OutputStatus.OK:
            record.succeed(message.data)
            return
        if status == OutputStatus.ERROR:
            error = payload.load_exception(message.data, describe(self.spec, record))
        elif status == OutputStatus.TIMEOUT:
            error = FunctionTimeoutError(
                f"{describe(self.spec, record)} ran past its timeout of {self.spec.timeout:g} s"
            )
        else:  # CANCELLED by the container although we did not cancel it
            error = ExecutionError(f"{describe(self.spec, record)} was cancelled in its container")
        self._retry_or_fail(record, error, crash=False)

    def _retry_or_fail(self, record: InputRecord, error: BaseException, *, crash: bool) -> None:
        retry = after_failure(record, self.spec, crash=crash)
        if retry is None:
            record.fail(error)
            return
        record.move_to(CallState.QUEUED)
        record.container_id = None
        if retry.delay <= 0:
            self._queue.push_front(record)
        else:
            self._delayed.add(record)
            asyncio.get_running_loop().call_later(retry.delay, self._requeue, record)

    def _requeue(self, record: InputRecord) -> None:
        if record in self._delayed:
            self._delayed.discard(record)
            self._queue.push_front(record)
            self._pump()

    def _on_deadline(self, record: InputRecord) -> None:
        """The container never reported on ``record`` past its timeout: fail it, kill it."""
        handle = self._containers.get(record.container_id or "")
        if handle is None or handle.running.pop(record.input_id, None) is None:
            return
        self._in_flight -= 1
        record.timer = None
        error = FunctionTimeoutError(
            f"{describe(self.spec, record)} ran past its timeout of {self.spec.timeout:g} s "
            f"and container {handle.container_id} did not stop it"
        )
        self._retry_or_fail(record, error, crash=False)
        self._kill(handle, "did not stop an input past its timeout")

    def _on_exit(self, container_id: str, code: int | None) -> None:
        handle = self._containers.get(container_id)
        if handle is not None:
            self._container_gone(handle, f"exited with code {code}")

    def _kill(self, handle: ContainerHandle, reason: str) -> None:
        self._container_gone(handle, reason)
        self._spawn(self._backend.stop(handle.container_id, 0.0))

    def _container_gone(self, handle: ContainerHandle, reason: str) -> None:
        """Mark ``handle`` stopped and put its unanswered inputs back (idempotent)."""
        if handle.state is ContainerState.STOPPED:
            return
        never_ready = handle.state is ContainerState.STARTING
        handle.move_to(ContainerState.STOPPED)
        self._containers.pop(handle.container_id, None)
        if handle.conn is not None:
            handle.conn.close()
        orphans = list(handle.running.values())
        handle.running.clear()
        self._in_flight -= len(orphans)
        for record in reversed(orphans):  # push_front keeps their order
            if record.done:
                continue
            error = ContainerCrashError(
                f"{describe(self.spec, record)}: container {handle.container_id} {reason} "
                f"while running it, and {INFRA_RETRIES} retries on new containers failed too"
            )
            self._retry_or_fail(record, error, crash=True)
        if never_ready and not self._closed:
            self._count_start_failure(handle, reason)
        self._pump()

    def _count_start_failure(self, handle: ContainerHandle, reason: str) -> None:
        self._start_failures += 1
        if self._start_failures >= START_FAILURE_LIMIT:
            self._start_failures = 0
            self._fail_waiting(
                ContainerInitError(
                    f"{START_FAILURE_LIMIT} containers for {self.spec.name} in a row stopped "
                    f"before they were ready; the last one {reason} (see its output above)"
                )
            )

    def _fail_waiting(self, error: BaseException) -> None:
        waiting = self._queue.drain() + list(self._delayed)
        self._delayed.clear()
        for record in waiting:
            record.fail(error)

    def _held_init_failure(self) -> ContainerInitError | None:
        if self._init_failure is None:
            return None
        when, error = self._init_failure
        if self._clock() - when > INIT_FAILURE_HOLD:
            self._init_failure = None
            return None
        return error

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Start the warm containers ``min_containers`` asks for."""
        self._pump()

    async def stop(self) -> None:
        """Fail what is waiting, stop every container (grace, then kill), and return."""
        self._closed = True
        if self._recheck is not None:
            self._recheck.cancel()
        stopped = ExecutionError(f"the app stopped before {self.spec.name} finished this input")
        self._fail_waiting(stopped)
        grace = settings.shutdown_grace()
        stops = []
        for handle in list(self._containers.values()):
            for record in handle.running.values():
                handle.send(Cancel(record.input_id))  # async inputs stop at once
                if not record.done:
                    record.fail(stopped)
            handle.send(Shutdown())
            stops.append(self._backend.stop(handle.container_id, grace))
        await asyncio.gather(*stops)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
