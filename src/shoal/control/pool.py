"""One function's pool: its queue, its containers, and the decisions that size it.

The pool is driven by events on the control plane's loop (an input arrives, an
output returns, a container becomes ready or dies, a timer fires). After each it
dispatches what it can (:mod:`~shoal.control.dispatcher`) and asks the pure
policy (:mod:`~shoal.control.autoscaler`) what to start and stop, then applies
the answer through the backend. Scale-up therefore happens on the very submit
that needs it. Every count the two need is kept up to date as events happen, so
an event costs the same with ten containers as with ten thousand.

The pool is made of three parts, one concept each (their shared state is
declared in :mod:`~shoal.control.pool_state`): this module's queue, dispatch and
scaling; launching and retiring containers (:mod:`~shoal.control.launching`); and
what a failed input or a lost container means (:mod:`~shoal.control.recovery`,
DESIGN section 3).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from shoal import settings
from shoal.backends.base import Backend, Preload
from shoal.control.autoscaler import IdleContainer, PoolSnapshot, decide, surplus
from shoal.control.budget import ContainerBudget
from shoal.control.calls import (
    CallState,
    InputRecord,
    attempt_of,
    describe,
    output_error,
    still_running,
)
from shoal.control.containers import ContainerHandle, ContainerSet, ContainerState, StartHealth
from shoal.control.events import EventBus
from shoal.control.input_queue import Waiting
from shoal.control.launching import Launching
from shoal.control.pool_state import Launcher
from shoal.control.recovery import Recovery
from shoal.control.tally import ContainerTally
from shoal.deadlines import DeadlineHeap
from shoal.exception import (
    ExecutionError,
    InvalidError,
)
from shoal.protocol import payload
from shoal.protocol.framing import after_turn
from shoal.protocol.messages import (
    Cancel,
    Credit,
    Feed,
    Item,
    LoadFailed,
    Many,
    Message,
    Output,
    OutputStatus,
    Ready,
    Report,
    Shutdown,
)
from shoal.spec.events import (
    ContainerDraining,
    ContainerReady,
    ContainerReport,
    ContainerStarting,
    ContainerStopped,
    InputCancelled,
    InputFailed,
    InputRetried,
    InputsDispatched,
    InputsFinished,
    InputsQueued,
    ScalingDecided,
    StopReason,
)
from shoal.spec.function import CodeRef, FunctionSpec
from shoal.spec.image import Environment
from shoal.spec.stats import FunctionStats

#: Seconds past ``timeout`` the pool waits for a container's own timeout report
#: before it fails the input itself and kills the container.
TIMEOUT_GRACE: Final = 5.0
#: Input ids, unique among every pool of this process (a call graph mixes pools).
_input_ids: Final = itertools.count(1)


class Pool(Launching, Recovery):
    """The queue, containers and autoscaling of one function (launching its containers
    and recovering from failures are its parts in ``control/launching.py`` and
    ``control/recovery.py``)."""

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
        self._deadlines = DeadlineHeap(lambda watched: self._on_deadline(watched[0]), still_running)
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
        self._on_reported = events.channel(ContainerReport)
        self._preload = Preload(
            module_kind=code.module_kind,
            module_name=code.module_name,
            module_file=code.module_file,
            sys_path=code.sys_path,
            image=environment.digest if environment is not None else "",
            bundle=code.bundle,
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
        parents: Sequence[InputRecord | None] = (),
    ) -> list[InputRecord]:
        """Queue several inputs at once; one dispatch and one scaling decision for all.
        ``call_ids``, when given, names the function call of each (durable spawns);
        ``parents`` the input whose code started each (None: none), for the call graph."""
        if self._closed:
            raise ExecutionError(f"function {self.spec.name} is stopped; start the app again")
        records = [
            InputRecord(f"in-{next(_input_ids)}", args, on_done, method, on_item, self.spec.name)
            for args in many
        ]
        for record, call_id in zip(records, call_ids, strict=False):
            record.call_id = call_id
        started_by: list[str] | None = None
        if any(parent is not None for parent in parents):
            started_by = []
            for record, parent in zip(records, parents, strict=False):
                if parent is not None:
                    parent.adopt(record)
                started_by.append(parent.input_id if parent is not None else "")
        held = self._health.held()
        now = self._clock()
        for record in records:
            record.queued_at = now
            if held is not None:
                self._fail(record, held)
            else:
                self._waiting.push(record)
        if self._on_queued and held is None:
            ids = [r.input_id for r in records]
            self._on_queued.publish(InputsQueued(self._prefix, ids, now, started_by))
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
            waiting_for=self._waiting_for(),
        )

    def _waiting_for(self) -> str:
        """Why containers this pool wants cannot start now ("" when none waits)."""
        if not self._awaiting_room or self._budget is None:
            return ""
        return self._budget.why(self, self.spec.resources)

    def containers(self) -> list[dict[str, Any]]:
        """Each container not yet stopped: id, state, pid and inputs running."""
        return [
            {
                "id": handle.container_id,
                "state": handle.state.name.lower(),
                "pid": handle.pid,
                "running": len(handle.running),
                "node": handle.grant.node if handle.grant is not None else "",
            }
            for handle in self._containers
            if handle.state is not ContainerState.STOPPED
        ]

    # -- dispatch and scaling ----------------------------------------------

    def _pump(self) -> None:
        self._pump_scheduled = False
        self._dispatch()
        self._autoscale()

    def _pump_soon(self) -> None:
        """Pump once at the end of this loop turn: the outputs of its reads free many
        slots, refilled with one dispatch and one write per container, not one each."""
        if not self._pump_scheduled:
            self._pump_scheduled = True
            after_turn(self._pump)

    def _dispatch(self) -> None:
        queue = self._waiting.main
        if not (queue.live or self._waiting.isolated.live or self._containers.solo):
            return  # nothing waits (a pump after outputs, usually): nothing to look up
        pick = self._containers.dispatcher.pick
        touched: set[ContainerHandle] = set()
        deadline = asyncio.get_running_loop().time() + self.spec.timeout + TIMEOUT_GRACE
        now = self._clock()
        if self._waiting.isolated.live or self._containers.solo:
            self._dispatch_isolated(touched, deadline, now)
        while queue.live:
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
        self._deadlines.watch((record, attempt_of(record)), deadline, self._containers.in_flight)
        container.dispatched.append(record)  # sent when the dispatch ends (send_dispatched)

    def _autoscale(self) -> None:
        if self._closed:
            return
        scaling = self.spec.scaling
        containers = self._containers
        # An isolated input needs a whole container: it counts as target inputs.
        waiting = self._waiting
        queued = waiting.main.live
        running = containers.live_running
        if containers.solo or waiting.isolated.live:
            queued += scaling.target * waiting.isolated.live
            running += containers.solo_slack()
        live = containers.live
        now = self._clock()
        # With no idle container there is none to offer the policy (the usual case
        # right after a dispatch), and nothing to size.
        idle: tuple[IdleContainer, ...] = ()
        if containers.idle:
            idle = self._idle_prefix(surplus(queued, running, live, scaling), now)
        decision = decide(PoolSnapshot(now, queued, running, live, idle, scaling))
        self._awaiting_room = 0
        for started in range(decision.start):
            grant = None
            if self._budget is not None:
                wanted = decision.start - started
                grant = self._budget.take(self, self._wake, self.spec.resources, wanted)
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
        if not queued and budget is not None and budget.waiting and budget.wanted_elsewhere(self):
            self.give_idle()  # another pool waits for the room this one's idle container holds
        if decision.recheck_at != self._recheck_at:
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

    # -- the containers' side ----------------------------------------------

    def on_message(self, handle: ContainerHandle, message: Message) -> None:
        """Handle one message from ``handle``'s container."""
        if isinstance(message, Many) and message.of(Output):
            finished = self._finished
            done: list[InputRecord] | None = [] if self._on_finished else None
            for input_id, status, data, stuck in zip(*message.columns, strict=True):
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
        else:
            self._on_rare(handle, message)

    def _on_rare(self, handle: ContainerHandle, message: Message) -> None:
        """A message a container sends a few times in its life."""
        if isinstance(message, Ready):
            enter = message.enter_seconds
            self._on_ready(handle, float(enter) if isinstance(enter, int | float) else 0.0)
        elif isinstance(message, Report):
            self._on_report(handle, message)
        elif isinstance(message, LoadFailed):
            self._on_load_failed(handle, message)
        else:
            self._kill(handle, f"sent an unexpected {type(message).__name__}", "crash")

    def _on_report(self, handle: ContainerHandle, message: Report) -> None:
        """What the container saw lately, published as it is once checked (the container
        runs other people's code: a malformed report is dropped, not trusted)."""
        sizes, lag = message.batch_sizes, message.loop_lag
        if not self._on_reported or not isinstance(sizes, list) or len(sizes) > 10_000:
            return
        if not isinstance(lag, int | float) or not all(
            isinstance(size, int) and 0 < size <= 1_000_000 for size in sizes
        ):
            return
        self._on_reported.publish(
            ContainerReport(
                self._prefix, handle.container_id, sizes, max(0.0, float(lag)), self._clock()
            )
        )

    def _publish_finished(self, handle: ContainerHandle, records: list[InputRecord]) -> None:
        now = self._clock()
        ids: list[str] = []
        waits: list[float] = []
        runs: list[float] = []
        for r in records:  # one loop, not three comprehensions (each a call of its own)
            ids.append(r.input_id)
            waits.append(r.dispatched_at - r.queued_at)
            runs.append(now - r.dispatched_at)
        self._on_finished.publish(
            InputsFinished(self._prefix, handle.container_id, ids, waits, runs, now)
        )

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
                    traceback=str(description.get("traceback") or ""),
                )
            else:
                self._retry_or_fail(record, output_error(self.spec, record, status), crash=False)
        self._pump_soon()

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Let the backend prepare (a fork server), and start ``min_containers`` containers."""
        self._spawn(self._backend.prepare(self._preload))
        if self.spec.resources.memory_limit is not None:
            self._arm_memory_check()
        self._pump()

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
