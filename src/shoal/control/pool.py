"""One function's pool: its queue, its containers, and the decisions that size it.

The pool is driven by events on the control plane's loop (an input arrives, an
output returns, a container becomes ready or dies, a timer fires). After each it
dispatches what it can (:mod:`~shoal.control.dispatcher`) and asks the pure
policy (:mod:`~shoal.control.autoscaler`) what to start and stop, then applies
the answer through the backend. Scale-up therefore happens on the very submit
that needs it. Every count the two need is kept up to date as events happen, so
an event costs the same with ten containers as with ten thousand.

Failure handling (DESIGN section 3) lives here too: a container that dies puts
its inputs back at the front of the queue (an infrastructure retry; an input
that keeps dying in company is isolated and runs alone, see
:mod:`~shoal.control.calls`), a container
that cannot load the user's code fails every waiting input with that error, and
an input that outlives its timeout without an answer from the container is failed
here and its container killed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, Final

from shoal import settings
from shoal.backends.base import Backend, ContainerLaunch, Preload
from shoal.control.autoscaler import IdleContainer, PoolSnapshot, decide, surplus
from shoal.control.budget import ContainerBudget
from shoal.control.calls import (
    CallState,
    InputRecord,
    after_failure,
    describe,
    output_error,
    timeout_error,
)
from shoal.control.containers import ContainerHandle, ContainerSet, ContainerState, StartHealth
from shoal.control.deadlines import Deadlines
from shoal.control.events import EventBus
from shoal.control.input_queue import Waiting
from shoal.control.tally import ContainerTally
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
    Credit,
    Feed,
    Item,
    Load,
    LoadFailed,
    Message,
    Output,
    OutputMany,
    OutputStatus,
    Ready,
    Shutdown,
)
from shoal.spec.events import (
    ContainerDraining,
    ContainerReady,
    ContainerStarting,
    ContainerStopped,
    InputCancelled,
    InputFailed,
    InputRetried,
    InputsDispatched,
    InputsFinished,
    InputsQueued,
    RetryReason,
    ScalingDecided,
    StopReason,
)
from shoal.spec.function import INFRA_RETRIES, CodeRef, FunctionSpec
from shoal.spec.image import Environment
from shoal.spec.resources import Grant
from shoal.spec.stats import FunctionStats

#: Seconds past ``timeout`` the pool waits for a container's own timeout report
#: before it fails the input itself and kills the container.
TIMEOUT_GRACE: Final = 5.0
#: Input ids, unique among every pool of this process (a call graph mixes pools).
_input_ids: Final = itertools.count(1)

#: Builds the launch description of a container from its id, label and the room it holds.
Launcher = Callable[[str, str, Grant | None], ContainerLaunch]
#: Seconds between looks at the memory of containers that have a memory limit.
MEMORY_CHECK: Final = 0.5


class Pool:
    """The queue, containers and autoscaling of one function."""

    def __init__(
        self,
        spec: FunctionSpec,
        code: CodeRef,
        backend: Backend,
        launcher: Launcher,
        clock: Callable[[], float] = time.monotonic,
        budget: ContainerBudget | None = None,
        prefix: str = "",
        label: str = "",
        environment: Environment | None = None,
        env: dict[str, str] | None = None,
        events: EventBus | None = None,
        tally: ContainerTally | None = None,
    ) -> None:
        self.spec = spec
        #: Variables every container gets (its secrets).
        self._env = dict(env or {})
        #: Container ids are ``{prefix}-c{n}``, unique among the control plane's pools.
        self._prefix = prefix or spec.name
        #: What its containers' output lines start with: ``[{label}-c{n}]``.
        self._label = label or self._prefix
        self._budget = budget
        self._code = code
        self._backend = backend
        self._launcher = launcher
        self._clock = clock
        self._waiting = Waiting()
        self._containers = ContainerSet(spec.scaling.target, spec.scaling.max_inputs, clock)
        self._numbers = itertools.count(1)
        self._health = StartHealth(clock)
        self._deadlines = Deadlines(self._on_deadline)
        self._recheck: asyncio.TimerHandle | None = None
        self._recheck_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._pump_scheduled = False
        self._awaiting_room = 0  # containers wanted at the last decision that did not fit
        self._memory_check: asyncio.TimerHandle | None = None
        #: What it publishes, on the control plane's bus (see control.events): each
        #: channel kept, so an event nobody hears costs one truth test.
        self.events = events = events or EventBus()
        #: Where its container counts come from (one per bus: the control plane's).
        self._tally = tally or ContainerTally(events)
        self._on_queued = events.channel(InputsQueued)
        self._on_dispatched = events.channel(InputsDispatched)
        self._on_finished = events.channel(InputsFinished)
        self._on_failed = events.channel(InputFailed)
        self._on_retried = events.channel(InputRetried)
        self._on_decided = events.channel(ScalingDecided)
        self._on_cancelled = events.channel(InputCancelled)
        self._on_starting = events.channel(ContainerStarting)
        self._on_up = events.channel(ContainerReady)
        self._on_draining = events.channel(ContainerDraining)
        self._on_stopped = events.channel(ContainerStopped)
        self._preload = Preload(
            module_kind=code.module_kind,
            module_name=code.module_name,
            module_file=code.module_file,
            sys_path=code.sys_path,
            environment=environment,
        )

    @property
    def preload(self) -> Preload:
        """What a fork server for this pool's containers imports."""
        return self._preload

    # -- the caller's side -------------------------------------------------

    def submit(
        self,
        args: bytes,
        on_done: Callable[[InputRecord], None],
        method: str = "",
        on_item: Callable[[bytes], None] | None = None,
    ) -> InputRecord:
        """Queue one input (``args`` already pickled) and scale for it.

        ``on_done`` is called once with the record when it reaches a final state;
        ``on_item`` with each value a generator yields before that. ``method``
        names the method of a class pool.

        Raises:
            ExecutionError: the pool is stopped.
        """
        return self.submit_many([args], on_done, method, on_item)[0]

    def submit_many(
        self,
        many: Iterable[bytes],
        on_done: Callable[[InputRecord], None],
        method: str = "",
        on_item: Callable[[bytes], None] | None = None,
        call_ids: Sequence[str] = (),
    ) -> list[InputRecord]:
        """Queue several inputs at once; one dispatch and one scaling decision for all.
        ``call_ids``, when given, names the function call of each (durable spawns)."""
        if self._closed:
            raise ExecutionError(f"function {self.spec.name} is stopped; start the app again")
        records = [
            InputRecord(f"in-{next(_input_ids)}", args, on_done, method, on_item, self.spec.name)
            for args in many
        ]
        for record, call_id in zip(records, call_ids, strict=False):
            record.call_id = call_id
        held = self._health.held()
        now = self._clock()
        for record in records:
            record.queued_at = now
            if held is not None:
                self._fail(record, held)
            else:
                self._waiting.push(record)
        if self._on_queued and held is None:
            self._on_queued.publish(InputsQueued(self._prefix, [r.input_id for r in records], now))
        self._pump()
        return records

    def cancel(self, record: InputRecord) -> None:
        """Cancel ``record``: dropped from the queue, or stopped in its container."""
        if record.done:
            return
        if record.state is CallState.QUEUED:
            self._waiting.forget(record)
        elif (container := self._containers.get(record.container_id or "")) is not None:
            container.send(Cancel(record.input_id))
        # A cancelled input keeps its slot until its container reports it stopped.
        record.move_to(CallState.CANCELLED)
        if self._on_cancelled:
            self._on_cancelled.publish(
                InputCancelled(self._prefix, record.input_id, record.container_id, self._clock())
            )
        self._pump()

    def feed(self, record: InputRecord, data: bytes) -> None:
        """Pass an ASGI ``receive`` event (pickled) to ``record``'s request, if it runs."""
        container = self._containers.get(record.container_id or "")
        if container is not None and record.state is CallState.RUNNING:
            record.fed = True
            container.send(Feed(record.input_id, data))
            if container.conn is not None:
                container.conn.flush()

    def credit(self, record: InputRecord, amount: int) -> None:
        """The caller took ``amount`` bytes of ``record``'s streamed response."""
        container = self._containers.get(record.container_id or "")
        if container is not None and record.state is CallState.RUNNING:
            container.send(Credit(record.input_id, amount))

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
        return FunctionStats(
            queued=len(self._waiting),
            running=self._containers.in_flight,
            containers=len(self._containers),
            ready=len(self._containers.dispatcher),
            containers_started=self._tally.started(self._prefix),
            awaiting_room=self._awaiting_room,
            containers_stopped=self._tally.stopped(self._prefix),
        )

    def containers(self) -> list[dict[str, Any]]:
        """Each container not yet stopped: id, state, pid and inputs running."""
        return [
            {
                "id": handle.container_id,
                "state": handle.state.name.lower(),
                "pid": handle.pid,
                "running": len(handle.running),
            }
            for handle in self._containers
            if handle.state is not ContainerState.STOPPED
        ]

    def stop_container(self, container_id: str) -> bool:
        """Retire container ``container_id`` (it stops once its inputs finish); return
        whether this pool has it."""
        handle = self._containers.get(container_id)
        if handle is None or handle.state is ContainerState.STOPPED:
            return False
        self._retire(handle, "stop")
        self._pump()
        return True

    # -- dispatch and scaling ----------------------------------------------

    def _pump(self) -> None:
        self._pump_scheduled = False
        self._dispatch()
        self._autoscale()

    def _pump_soon(self) -> None:
        """Pump once at the end of this loop turn: the outputs of one read free many
        slots, refilled with one dispatch and one write per container, not one each."""
        if not self._pump_scheduled:
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _dispatch(self) -> None:
        queue = self._waiting.main
        pick = self._containers.dispatcher.pick
        touched: set[ContainerHandle] = set()
        deadline = asyncio.get_running_loop().time() + self.spec.timeout + TIMEOUT_GRACE
        now = self._clock()
        if len(self._waiting.isolated) or self._containers.solo:
            self._dispatch_isolated(touched, deadline, now)
        while len(queue):
            container = pick()
            if container is None:
                break
            record = queue.pop()
            if record is None:
                break
            self._assign(record, container, deadline, now)
            touched.add(container)
        for container in touched:  # one message and one write per container
            if self._on_dispatched:
                self._publish_dispatched(container, now)
            container.send_dispatched()

    def _publish_dispatched(self, container: ContainerHandle, now: float) -> None:
        records = container.dispatched
        self._on_dispatched.publish(
            InputsDispatched(
                self._prefix,
                container.container_id,
                [r.input_id for r in records],
                [now - r.queued_at for r in records],
                now,
            )
        )

    def _dispatch_isolated(
        self, touched: set[ContainerHandle], deadline: float, now: float
    ) -> None:
        """Give each isolated input a container of its own: an empty one, held out of
        the dispatcher while it runs. At ``max_containers``, with no empty container,
        the least busy one is held until it empties, so isolated inputs cannot starve."""
        containers = self._containers
        isolated = self._waiting.isolated
        while len(isolated):
            container = containers.empty_solo() or containers.dispatcher.pick_empty()
            if container is None:
                scaling = self.spec.scaling
                at_max = scaling.max_containers is not None and (
                    containers.live >= scaling.max_containers
                )
                if at_max and len(containers.solo) < len(isolated):
                    busy = containers.dispatcher.least_busy()
                    if busy is not None:
                        containers.hold_solo(busy)
                break
            record = isolated.pop()
            if record is None:
                break
            containers.hold_solo(container)
            self._assign(record, container, deadline, now)
            touched.add(container)
        if not len(isolated):
            containers.release_empty_solos()

    def _assign(
        self, record: InputRecord, container: ContainerHandle, deadline: float, now: float
    ) -> None:
        """Give ``record`` to ``container``, to be answered by ``deadline`` (loop time)."""
        record.move_to(CallState.RUNNING)
        record.container_id = container.container_id
        record.dispatched_at = now
        self._containers.add_running(container, record)
        self._deadlines.watch(record, deadline, self._containers.in_flight)
        container.dispatched.append(record)  # sent when the dispatch ends (send_dispatched)

    def _autoscale(self) -> None:
        if self._closed:
            return
        scaling = self.spec.scaling
        containers = self._containers
        # An isolated input needs a whole container: it counts as target inputs.
        waiting = self._waiting
        queued = len(waiting.main)
        running = containers.live_running
        if containers.solo or len(waiting.isolated):
            queued += scaling.target * len(waiting.isolated)
            running += containers.solo_slack()
        live = containers.live
        now = self._clock()
        idle = self._idle_prefix(surplus(queued, running, live, scaling), now)
        decision = decide(PoolSnapshot(now, queued, running, live, idle, scaling))
        self._awaiting_room = 0
        for started in range(decision.start):
            grant = None
            if self._budget is not None:
                grant = self._budget.take(self, self._wake, self.spec.resources)
                if grant is None:  # the machine is full: the rest waits (see control.budget)
                    self._awaiting_room = decision.start - started
                    break
            self._start_container(grant)
        for container_id in decision.stop:
            self._retire(self._containers[container_id], "idle")
        if self._on_decided:
            self._on_decided.publish(
                ScalingDecided(
                    self._prefix,
                    queued,
                    running,
                    live,
                    len(idle),
                    decision.start,
                    decision.stop,
                    self._awaiting_room,
                    now,
                )
            )
        budget = self._budget
        if not queued and budget is not None and budget.wanted_elsewhere(self):
            self.give_idle()  # another pool waits for the room this one's idle container holds
        self._recheck_later(decision.recheck_at, now)

    def _idle_prefix(self, limit: int, now: float) -> tuple[IdleContainer, ...]:
        """The longest-idle containers the policy may need: at most ``limit``, and none
        after the first one still inside its window (those after it are younger still)."""
        window = self.spec.scaling.scaledown_window
        prefix: list[IdleContainer] = []
        for container in itertools.islice(self._containers.longest_idle(), limit):
            since = container.idle_since or now
            prefix.append(IdleContainer(container.container_id, since))
            if now - since < window:
                break
        return tuple(prefix)

    def _recheck_later(self, at: float | None, now: float) -> None:
        """Run the policy again at ``at`` (None: no need). A timer already set to fire
        no later is kept: firing early only runs the pure policy again, which sets the
        next one; so a busy pool does not cancel and remake a timer for every input."""
        if at == self._recheck_at:
            return
        if self._recheck_at is not None and (at is None or self._recheck_at <= at):
            return
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        self._recheck_at = at
        if at is not None:
            self._recheck = asyncio.get_running_loop().call_later(at - now, self._on_recheck)

    def _wake(self) -> None:
        """Room for a container freed up elsewhere: try again, on the next loop turn."""
        if not self._closed:
            asyncio.get_running_loop().call_soon(self._pump)

    def give_idle(self) -> bool:
        """Retire this pool's longest-idle container above ``min_containers`` (for another
        pool that needs the room); return whether one was retired."""
        if self._closed or self._containers.live <= self.spec.scaling.min_containers:
            return False
        for container in self._containers.longest_idle():
            self._retire(container, "idle")
            return True
        return False

    def _on_recheck(self) -> None:
        self._recheck = None
        self._recheck_at = None
        self._autoscale()

    def _start_container(self, grant: Grant | None) -> None:
        number = next(self._numbers)
        container_id = f"{self._prefix}-c{number}"
        handle = self._containers.create(container_id, self.spec.scaling.max_inputs)
        handle.grant = grant
        if self._on_starting:
            self._on_starting.publish(
                ContainerStarting(self._prefix, container_id, handle.started_at)
            )
        self._spawn(self._launch(handle))

    async def _launch(self, handle: ContainerHandle) -> None:
        label = self._label + handle.container_id.removeprefix(self._prefix)
        launch = self._launcher(handle.container_id, label, handle.grant)
        launch = dataclasses.replace(
            launch,
            preload=self._preload,
            environment=self._preload.environment,
            env={**self._env, **launch.env},
        )
        try:
            handle.pid = await self._backend.start(launch, self._on_exit)
        except OSError as exc:
            self._container_gone(handle, f"could not be started ({exc})", "crash")

    def _retire(self, handle: ContainerHandle, reason: StopReason) -> None:
        """Take ``handle`` out of service for ``reason``; it stops once its inputs finish."""
        if handle.live:
            self._drain(handle, reason)
        self._stop_if_drained(handle)

    def _drain(self, handle: ContainerHandle, reason: StopReason) -> None:
        handle.stop_reason = reason
        self._containers.move(handle, ContainerState.DRAINING)
        if self._on_draining:
            self._on_draining.publish(
                ContainerDraining(self._prefix, handle.container_id, reason, self._clock())
            )

    def _stop_if_drained(self, handle: ContainerHandle) -> None:
        if handle.state is ContainerState.DRAINING and not handle.running:
            handle.send(Shutdown())
            self._spawn(self._backend.stop(handle.container_id, settings.shutdown_grace()))

    # -- the containers' side ----------------------------------------------

    def owns(self, container_id: str) -> bool:
        """Whether ``container_id`` is one of this pool's live containers."""
        return self._containers.get(container_id) is not None

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
                parameters=code.parameters,
            )
        )
        return handle

    def on_message(self, handle: ContainerHandle, message: Message) -> None:
        """Handle one message from ``handle``'s container."""
        if isinstance(message, OutputMany):
            finished = self._finished
            done: list[InputRecord] | None = [] if self._on_finished else None
            for input_id, status, data, stuck in zip(
                message.input_ids, message.statuses, message.data, message.stuck, strict=True
            ):
                finished(handle, input_id, status, data, stuck, done)
            if done:
                self._publish_finished(handle, done)
        elif isinstance(message, Output):
            done = [] if self._on_finished else None
            self._finished(
                handle, message.input_id, message.status, message.data, message.stuck, done
            )
            if done:
                self._publish_finished(handle, done)
        elif isinstance(message, Item):
            record = handle.running.get(message.input_id)
            if record is not None and not record.done and record.on_item is not None:
                record.items += 1
                record.on_item(message.data)
        elif isinstance(message, Credit):
            record = handle.running.get(message.input_id)
            if record is not None and not record.done and record.on_credit is not None:
                record.on_credit(message.amount)
        elif isinstance(message, Ready):
            self._on_ready(handle)
        elif isinstance(message, LoadFailed):
            self._on_load_failed(handle, message)
        else:
            self._kill(handle, f"sent an unexpected {type(message).__name__}", "crash")

    def _publish_finished(self, handle: ContainerHandle, records: list[InputRecord]) -> None:
        now = self._clock()
        self._on_finished.publish(
            InputsFinished(
                self._prefix,
                handle.container_id,
                [r.input_id for r in records],
                [r.dispatched_at - r.queued_at for r in records],
                [now - r.dispatched_at for r in records],
                now,
            )
        )

    def on_disconnect(self, handle: ContainerHandle) -> None:
        """The container's connection closed: it is gone, whether or not it exited yet."""
        self._kill(handle, "disconnected", handle.stop_reason or "crash")

    def _on_ready(self, handle: ContainerHandle) -> None:
        if handle.state is not ContainerState.STARTING:
            return
        self._containers.move(handle, ContainerState.READY)
        self._health.ready()
        if self._on_up:
            now = self._clock()
            self._on_up.publish(
                ContainerReady(self._prefix, handle.container_id, now - handle.started_at, now)
            )
        self._pump()

    def _on_load_failed(self, handle: ContainerHandle, message: LoadFailed) -> None:
        detail = f"\n\n{message.traceback.rstrip()}" if message.traceback else ""
        error = ContainerInitError(
            f"container for {self.spec.name} could not load it: {message.message}{detail}"
        )
        self._health.load_failed(error)
        if handle.state is ContainerState.STARTING:
            self._drain(handle, "crash")
        self._fail_waiting(error)

    def _finished(
        self,
        handle: ContainerHandle,
        input_id: str,
        status: int,
        data: bytes,
        stuck: bool,
        done: list[InputRecord] | None = None,
    ) -> None:
        """``handle``'s container reports how ``input_id`` ended (an :class:`Output`);
        ``done``, when given, collects the inputs that succeeded (for one event)."""
        record = self._containers.remove_running(handle, input_id)
        if record is None:
            return
        if stuck:
            self._retire(handle, "timeout")
        else:
            self._stop_if_drained(handle)
        if not record.done:
            if status == OutputStatus.OK:
                record.succeed(data)
                if done is not None:
                    done.append(record)
            elif status == OutputStatus.ERROR:  # described by the container: never unpickled
                description, pickled = payload.read_failure(data)
                error = payload.described_error(description, describe(self.spec, record))
                self._retry_or_fail(
                    record,
                    error,
                    crash=False,
                    data=pickled,
                    retryable=description["retryable"],
                    kind=str(description.get("type") or ""),
                )
            else:
                self._retry_or_fail(record, output_error(self.spec, record, status), crash=False)
        self._pump_soon()

    def _retry_or_fail(
        self,
        record: InputRecord,
        error: BaseException,
        *,
        crash: bool,
        alone: bool = True,
        data: bytes | None = None,
        retryable: bool = True,
        kind: str = "",
    ) -> None:
        """Queue ``record`` again, or fail it with ``error`` (``data``: the container's
        pickle of it, when the function raised; ``retryable``: false for an exit that a
        run again would not change, by the container's description; ``kind``: the
        type the function raised, as the container named it)."""
        retry = after_failure(record, self.spec, crash=crash, alone=alone) if retryable else None
        if retry is None:
            record.error_data = data
            self._fail(record, error, kind)
            return
        if self._on_retried:
            reason: RetryReason = "crash" if crash else "timeout" if _timed_out(error) else "error"
            attempt = record.failures + record.crashes + record.crowd_crashes
            self._on_retried.publish(
                InputRetried(
                    self._prefix,
                    record.input_id,
                    record.container_id,
                    reason,
                    attempt,
                    retry.delay,
                    self._clock(),
                )
            )
        record.move_to(CallState.QUEUED)
        record.container_id = None
        record.queued_at = self._clock() + max(retry.delay, 0.0)
        if retry.delay <= 0:
            self._waiting.push_front(record)
        else:
            self._waiting.delay(record)
            asyncio.get_running_loop().call_later(retry.delay, self._requeue, record)

    def _requeue(self, record: InputRecord) -> None:
        if self._waiting.release(record):
            self._pump()

    def _on_deadline(self, record: InputRecord) -> None:
        """The container never reported on ``record`` past its timeout: fail it, kill it."""
        handle = self._containers.get(record.container_id or "")
        if handle is None or self._containers.remove_running(handle, record.input_id) is None:
            return
        detail = f" and container {handle.container_id} did not stop it"
        self._retry_or_fail(record, timeout_error(self.spec, record, detail), crash=False)
        self._kill(handle, "did not stop an input past its timeout", "timeout")

    def _on_exit(self, container_id: str, code: int | None) -> None:
        handle = self._containers.get(container_id)
        if handle is not None:
            self._container_gone(handle, f"exited with code {code}", handle.stop_reason or "crash")

    def _kill(self, handle: ContainerHandle, detail: str, reason: StopReason) -> None:
        self._container_gone(handle, detail, reason)
        self._spawn(self._backend.stop(handle.container_id, 0.0))

    def _container_gone(self, handle: ContainerHandle, detail: str, reason: StopReason) -> None:
        """Mark ``handle`` stopped (``detail`` says how, ``reason`` why) and put its
        unanswered inputs back (idempotent)."""
        if handle.state is ContainerState.STOPPED:
            return
        never_ready = handle.state is ContainerState.STARTING
        self._containers.move(handle, ContainerState.STOPPED)
        if self._on_stopped:
            now = self._clock()
            self._on_stopped.publish(
                ContainerStopped(
                    self._prefix, handle.container_id, reason, detail, now - handle.started_at, now
                )
            )
        if self._budget is not None and handle.grant is not None:
            self._budget.give_back(handle.grant)
            handle.grant = None
        if handle.conn is not None:
            handle.conn.close()
        orphans = list(handle.running.values())
        handle.running.clear()
        alone = len(orphans) == 1
        for record in reversed(orphans):  # push_front keeps their order
            if record.done:
                continue
            error = ContainerCrashError(
                f"{describe(self.spec, record)}: container {handle.container_id} {detail} "
                f"while running it, and {INFRA_RETRIES} retries on new containers "
                "(running it alone) failed too"
            )
            self._retry_or_fail(record, error, crash=True, alone=alone)
        if never_ready and not self._closed:
            gave_up = self._health.start_failed(self.spec.name, detail)
            if gave_up is not None:
                self._fail_waiting(gave_up)
        self._pump()

    def _fail_waiting(self, error: BaseException) -> None:
        for record in self._waiting.drain():
            self._fail(record, error)

    def _fail(self, record: InputRecord, error: BaseException, kind: str = "") -> None:
        """Fail ``record`` for good with ``error``, and say so on the bus (``kind``: the
        type the user's code raised, when ``error`` stands in for it)."""
        record.fail(error)
        if self._on_failed:
            now = self._clock()
            ran = record.container_id is not None  # cleared when it goes back to the queue
            self._on_failed.publish(
                InputFailed(
                    self._prefix,
                    record.input_id,
                    record.container_id,
                    kind or type(error).__name__,
                    str(error),
                    (record.dispatched_at if ran else now) - record.queued_at,
                    now - record.dispatched_at if ran else 0.0,
                    now,
                )
            )

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Let the backend prepare (a fork server), and start ``min_containers`` containers."""
        self._spawn(self._backend.prepare(self._preload))
        if self.spec.resources.memory_limit is not None:
            self._arm_memory_check()
        self._pump()

    def _arm_memory_check(self) -> None:
        self._memory_check = asyncio.get_running_loop().call_later(MEMORY_CHECK, self._check_memory)

    def _check_memory(self) -> None:
        """Stop containers over the function's memory limit; their inputs are told why."""
        limit = self.spec.resources.memory_limit
        assert limit is not None
        for handle in self._containers:
            used = self._backend.rss(handle.container_id)
            if used is not None and used > limit:
                self._kill(
                    handle,
                    f"was stopped: it used {used} MiB, over its memory limit of {limit} MiB,",
                    "oom",
                )
        if not self._closed:
            self._arm_memory_check()

    async def stop(self, reason: StopReason = "stop") -> None:
        """Fail what is waiting, stop every container (grace, then kill), and return;
        ``reason`` says why its containers stop (``"redeploy"``: a new version)."""
        self._closed = True
        if self._memory_check is not None:
            self._memory_check.cancel()
        self._recheck_later(None, self._clock())
        self._deadlines.close()
        stopped = ExecutionError(f"the app stopped before {self.spec.name} finished this input")
        self._fail_waiting(stopped)
        grace = settings.shutdown_grace()
        stops = []
        handles = list(self._containers)
        for handle in handles:
            handle.stop_reason = handle.stop_reason or reason
            for record in handle.running.values():
                handle.send(Cancel(record.input_id))  # async inputs stop at once
                if not record.done:
                    self._fail(record, stopped)
            handle.send(Shutdown())
            stops.append(self._backend.stop(handle.container_id, grace))
        await asyncio.gather(*stops)
        for handle in handles:  # the backend's exit report may come later, or not at all
            self._container_gone(handle, "was stopped", handle.stop_reason or reason)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _timed_out(error: BaseException) -> bool:
    return isinstance(error, FunctionTimeoutError)
