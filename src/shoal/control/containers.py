"""The control plane's view of containers: each one's lifecycle, and a pool's set of them.

A container's free slots are ``max_inputs`` minus the inputs sent to it and not
yet answered, the same number the container's own
:class:`shoal.container.slots.Slots` holds; the dispatcher buckets containers by
it. :class:`ContainerSet` keeps every
count the dispatcher and the autoscaler read up to date as inputs come and go, so
neither ever walks the whole pool.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final

from shoal.control.dispatcher import Dispatcher
from shoal.exception import ContainerInitError
from shoal.protocol.framing import FramedProtocol, batches
from shoal.protocol.messages import Input, Many, Message, batch
from shoal.spec.events import StopReason
from shoal.spec.resources import Grant

if TYPE_CHECKING:
    from shoal.control.calls import InputRecord

#: Containers in a row that exit before becoming ready before waiting inputs fail.
START_FAILURE_LIMIT: Final = 3
#: Seconds after a container failed to load the user's code during which new
#: inputs fail at once with the same error instead of starting more containers.
INIT_FAILURE_HOLD: Final = 5.0


class ContainerState(enum.Enum):
    """Lifecycle of a container; transitions go left to right only."""

    STARTING = "starting"  # process launched, not yet loaded the function
    READY = "ready"  # takes inputs
    DRAINING = "draining"  # takes no more inputs; stops when its inputs finish
    STOPPED = "stopped"  # gone; its unanswered inputs were re-queued or failed


#: States that count as capacity: a tuple, looked up once (in 3.11 an Enum member's
#: lookup goes through EnumType.__getattr__, and its hash is Python code).
_LIVE: Final = (ContainerState.STARTING, ContainerState.READY)

_ALLOWED: dict[ContainerState, frozenset[ContainerState]] = {
    ContainerState.STARTING: frozenset(
        {ContainerState.READY, ContainerState.DRAINING, ContainerState.STOPPED}
    ),
    ContainerState.READY: frozenset({ContainerState.DRAINING, ContainerState.STOPPED}),
    ContainerState.DRAINING: frozenset({ContainerState.STOPPED}),
    ContainerState.STOPPED: frozenset(),
}


class ContainerHandle:
    """One container of a pool, as the control plane tracks it."""

    __slots__ = (
        "conn",
        "container_id",
        "dispatched",
        "grant",
        "idle_since",
        "max_inputs",
        "pid",
        "running",
        "solo",
        "started_at",
        "state",
        "stop_reason",
    )

    def __init__(self, container_id: str, max_inputs: int, started_at: float = 0.0) -> None:
        self.container_id = container_id
        #: When its pool asked for it, on the pool's clock.
        self.started_at = started_at
        #: Why it drains or stops, once the pool has decided it should (None: unasked,
        #: so an exit is a crash).
        self.stop_reason: StopReason | None = None
        self.max_inputs = max_inputs
        self.state = ContainerState.STARTING
        self.conn: FramedProtocol | None = None
        self.pid: int | None = None
        #: The machine's room this container holds (cores, memory, GPUs), if any.
        self.grant: Grant | None = None
        #: Inputs sent to this container and not yet answered, by input id.
        self.running: dict[str, InputRecord] = {}
        #: Inputs dispatched to it in this loop turn, not yet sent (see send_dispatched).
        self.dispatched: list[InputRecord] = []
        #: When the container last had no input; None while it runs some or starts.
        self.idle_since: float | None = None
        #: Kept out of the dispatcher for an isolated input (which runs alone): it
        #: runs one, or is emptying to take one.
        self.solo = False

    @property
    def live(self) -> bool:
        """Starting or ready: it counts as capacity for the autoscaler."""
        return self.state in _LIVE

    def move_to(self, state: ContainerState) -> None:
        """Change state.

        Raises:
            RuntimeError: the transition is not allowed (a bug in the pool).
        """
        if state not in _ALLOWED[self.state]:
            raise RuntimeError(f"container {self.container_id}: {self.state.name} -> {state.name}")
        self.state = state

    def send(self, message: Message) -> None:
        """Send ``message`` if the container is connected; drop it otherwise."""
        if self.conn is not None:
            self.conn.send(message)

    def send_dispatched(self) -> None:
        """Send the inputs dispatched to this container in this loop turn, in as few
        messages as the frame limit allows, and write them out now. Dropped if the
        container is not connected (they are in ``running``: its loss re-queues them)."""
        records = self.dispatched
        conn = self.conn
        if conn is not None and records:
            runs = batches([len(r.args) for r in records])
            for start, end in runs[:-1]:
                conn.send(_inputs(records[start:end]))
            start, end = runs[-1]
            conn.send_now(_inputs(records[start:end]))  # with the others: one write
        records.clear()

    def __repr__(self) -> str:
        return f"<Container {self.container_id} {self.state.name} running={len(self.running)}>"


def _inputs(records: list[InputRecord]) -> Input | Many:
    """One message for ``records``: an Input for one, a batch of them for several."""
    if len(records) == 1:
        record = records[0]
        return Input(record.input_id, record.args, record.method, record.call_id)
    return batch(
        Input,
        [r.input_id for r in records],
        [r.args for r in records],
        [r.method for r in records],
        [r.call_id for r in records],
    )


class StartHealth:
    """Whether a pool's containers can start, so a broken function fails fast.

    A container that cannot load the user's code fails every waiting input with
    that error, and for :data:`INIT_FAILURE_HOLD` seconds new inputs fail with it
    at once instead of starting more containers. Containers that exit before
    becoming ready :data:`START_FAILURE_LIMIT` times in a row fail what waits too.
    Either way there is no restart storm.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._in_a_row = 0
        self._load_failure: tuple[float, ContainerInitError] | None = None

    def ready(self) -> None:
        """A container became ready: whatever failed before is forgotten."""
        self._in_a_row = 0
        self._load_failure = None

    def load_failed(self, error: ContainerInitError) -> None:
        """A container could not load the user's code."""
        self._load_failure = (self._clock(), error)

    def held(self) -> ContainerInitError | None:
        """The load failure new inputs should fail with now, if any."""
        if self._load_failure is None:
            return None
        when, error = self._load_failure
        if self._clock() - when > INIT_FAILURE_HOLD:
            self._load_failure = None
            return None
        return error

    def start_failed(self, name: str, reason: str) -> ContainerInitError | None:
        """A container stopped before it was ready; the error for what waits, at the limit."""
        self._in_a_row += 1
        if self._in_a_row < START_FAILURE_LIMIT:
            return None
        self._in_a_row = 0
        return ContainerInitError(
            f"{START_FAILURE_LIMIT} containers for {name} in a row stopped before they "
            f"were ready; the last one {reason} (see its output above)"
        )


class ContainerSet:
    """A pool's containers, with the counts its dispatch and scaling need.

    Every change to a container's state or running inputs goes through
    :meth:`move`, :meth:`add_running` and :meth:`remove_running`.
    """

    def __init__(self, target: int, max_inputs: int, clock: Callable[[], float]) -> None:
        self.dispatcher = Dispatcher(target, max_inputs)
        self._clock = clock
        self._all: dict[str, ContainerHandle] = {}
        #: Ready containers with no input, longest idle first (the clock only grows);
        #: ordered so the first entries stay O(1) to reach after many removals.
        #: Ready containers running nothing, longest idle first (read, not changed, outside).
        self.idle: OrderedDict[str, ContainerHandle] = OrderedDict()
        self.live = 0  # containers starting or ready
        self.live_running = 0  # inputs on those
        self.in_flight = 0  # inputs on any container
        #: Ready containers held out of the dispatcher for isolated inputs.
        self.solo: dict[str, ContainerHandle] = {}

    def __len__(self) -> int:
        return len(self._all)

    def __iter__(self) -> Iterator[ContainerHandle]:
        return iter(list(self._all.values()))

    def __getitem__(self, container_id: str) -> ContainerHandle:
        return self._all[container_id]

    def get(self, container_id: str) -> ContainerHandle | None:
        """The container with that id, unless it stopped."""
        return self._all.get(container_id)

    def longest_idle(self) -> Iterator[ContainerHandle]:
        """Idle ready containers, longest idle first."""
        return iter(self.idle.values())

    def create(self, container_id: str, max_inputs: int) -> ContainerHandle:
        """Register a new container in STARTING."""
        handle = ContainerHandle(container_id, max_inputs, self._clock())
        self._all[container_id] = handle
        self.live += 1
        return handle

    def move(self, container: ContainerHandle, state: ContainerState) -> None:
        """Change ``container``'s state and every count that depends on it."""
        was_live = container.live
        if container.state is ContainerState.READY:
            self.dispatcher.remove(container)
            self.idle.pop(container.container_id, None)
            if container.solo:
                container.solo = False
                del self.solo[container.container_id]
        container.move_to(state)
        if state is ContainerState.READY:
            self.dispatcher.add(container)
            if not container.running:
                self._mark_idle(container)
        if was_live and not container.live:
            self.live -= 1
            self.live_running -= len(container.running)
        if state is ContainerState.STOPPED:
            self._all.pop(container.container_id, None)
            self.in_flight -= len(container.running)

    def add_running(self, container: ContainerHandle, record: InputRecord) -> None:
        """``record`` was sent to ``container``."""
        before = len(container.running)
        container.running[record.input_id] = record
        self.in_flight += 1
        if container.state in _LIVE:  # container.live, without a call on the hot path
            self.live_running += 1
        self.dispatcher.moved(container, before)
        if before == 0:
            self.idle.pop(container.container_id, None)
            container.idle_since = None

    def remove_running(self, container: ContainerHandle, input_id: str) -> InputRecord | None:
        """``container`` answered ``input_id``; return its record (``None`` if unknown)."""
        before = len(container.running)
        record = container.running.pop(input_id, None)
        if record is None:
            return None
        self.in_flight -= 1
        if container.state in _LIVE:
            self.live_running -= 1
        self.dispatcher.moved(container, before)
        if before == 1 and container.state is ContainerState.READY:
            self._mark_idle(container)
        return record

    # -- isolated inputs: containers that run one input alone -----------------

    def hold_solo(self, container: ContainerHandle) -> None:
        """Take ready ``container`` out of the dispatcher: it is to run one input alone."""
        if not container.solo:
            self.dispatcher.remove(container)
            container.solo = True
            self.solo[container.container_id] = container

    def empty_solo(self) -> ContainerHandle | None:
        """A held container that runs nothing now (ready for an isolated input)."""
        for container in self.solo.values():
            if not container.running:
                return container
        return None

    def release_empty_solos(self) -> None:
        """Give held containers that run nothing back to the dispatcher."""
        for container in [c for c in self.solo.values() if not c.running]:
            container.solo = False
            del self.solo[container.container_id]
            self.dispatcher.add(container)

    def solo_slack(self) -> int:
        """Slots held containers leave unused, at ``target`` inputs each (for scaling)."""
        if not self.solo:
            return 0
        target = self.dispatcher.target
        return sum(max(0, target - len(c.running)) for c in self.solo.values())

    def _mark_idle(self, container: ContainerHandle) -> None:
        container.idle_since = self._clock()
        self.idle[container.container_id] = container
