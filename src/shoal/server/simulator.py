"""What-if: a function's recorded traffic replayed through the real pool under other
scaling settings, on a virtual clock (``shoal simulate``).

The replay runs Shoal's own :class:`~shoal.control.pool.Pool` (its dispatcher, its
autoscaling policy, its scale-down timers) on an event loop whose clock jumps to the
next timer instead of waiting for it (:class:`VirtualLoop`), against a fleet of
pretend containers (:class:`_Fleet`): each is ready after a start-up time taken from
the recording, in turn, and runs each input for the time that input ran. Inputs
arrive when they arrived. A day of traffic replays in seconds, and what comes out is
what the pool would have done: container-seconds (what it costs), p50/p99 queue
wait, cold starts (containers started) and the peak of containers at once.

The recorded run's own figures are measured from the recording the same way
(:func:`measured`), so a table puts them side by side; a replay with the recorded
settings should come out close to the recording, and a test checks it does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import selectors
from collections.abc import Iterable, Mapping
from typing import Any

from shoal.backends.base import Backend, ContainerLaunch, OnExit
from shoal.control.calls import InputRecord
from shoal.control.pool import Pool
from shoal.protocol.messages import Input, Many, Message, Output, OutputStatus, Ready, Shutdown
from shoal.server.recorder import Recording
from shoal.spec.function import CodeRef, FunctionSpec, Scaling
from shoal.spec.resources import Grant

#: The scaling settings a what-if may change.
SETTINGS = (
    "max_inputs",
    "target_inputs",
    "scaledown_window",
    "buffer_containers",
    "min_containers",
    "max_containers",
)
#: Points of an outcome's containers-over-time series, at most.
POINTS = 400
#: Start-up seconds of a replayed container when the recording has none.
DEFAULT_STARTUP = 0.05


@dataclasses.dataclass
class Outcome:
    """What a run cost and how it served its inputs."""

    container_seconds: float
    wait_p50: float
    wait_p99: float
    cold_starts: int
    peak_containers: int
    inputs: int
    #: Containers over time, ``(seconds since the first arrival, containers)`` at each
    #: change, at most :data:`POINTS` of them (for a plot).
    containers: list[tuple[float, int]] = dataclasses.field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: Virtual seconds each turn of a replay's loop takes.
TURN = 1e-6


class Stalled(RuntimeError):
    """A replay waits for something that nothing will ever do (a bug, never a result)."""


class _Selector(selectors.BaseSelector):
    """A selector that, instead of sleeping until the next timer, moves the clock there
    (the loop's own self-pipe still works, through a real selector)."""

    def __init__(self) -> None:
        self.now = 0.0
        self._real = selectors.DefaultSelector()

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready:
            return ready
        if timeout is None:  # nothing will ever happen: the replay waits on nothing
            raise Stalled("the replay stalled: nothing is scheduled")
        # Each turn of the loop takes a microsecond, as a real one takes some time: a
        # timer set for "now" (a policy's recheck at the very end of a window) fires
        # after the window has passed, not in the same instant again and again.
        self.now += max(timeout, TURN)
        return ready

    def close(self) -> None:
        self._real.close()

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop on a virtual clock: ``time()`` is virtual, and a loop with nothing to
    do jumps to its next timer at once."""

    def __init__(self) -> None:
        self._virtual = _Selector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now


class _Container:
    """A pretend container's connection: runs each input it is sent for its recorded
    time, and exits once told to shut down and idle."""

    def __init__(self, fleet: _Fleet, container_id: str, on_exit: OnExit) -> None:
        self.fleet = fleet
        self.container_id = container_id
        self.on_exit = on_exit
        self.handle: Any = None
        self.running = 0
        self.shutting_down = False
        self.gone = False

    def send(self, message: Message) -> None:
        inputs: Iterable[Any] = ()
        if isinstance(message, Input):
            inputs = (message,)
        elif isinstance(message, Many) and message.of(Input):
            inputs = message.each()
        elif isinstance(message, Shutdown):
            self.shutting_down = True
            self._maybe_exit()
        for item in inputs:
            self.running += 1
            self.fleet.dispatched(item)
            run = self.fleet.run_time(item)
            self.fleet.loop.call_later(run, self._finish, item.input_id)

    send_now = send

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def _finish(self, input_id: str) -> None:
        if self.gone:
            return
        self.running -= 1
        self.fleet.pool.on_message(self.handle, Output(input_id, int(OutputStatus.OK), b"", False))
        self._maybe_exit()

    def _maybe_exit(self) -> None:
        if self.shutting_down and not self.running and not self.gone:
            self.fleet.loop.call_soon(self.fleet.exited, self, 0)


class _Fleet(Backend):
    """Starts pretend containers, each ready after the next recorded start-up time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, startups: list[float]) -> None:
        self.loop = loop
        self.pool: Pool = None  # type: ignore[assignment]  # set once the pool exists
        self._startups = itertools.cycle(startups or [DEFAULT_STARTUP])
        self._runs: dict[str, float] = {}
        self._arrived: dict[str, float] = {}
        self.waits: list[float] = []
        self.containers: dict[str, _Container] = {}
        self.lifetimes: list[float] = []
        self._started_at: dict[str, float] = {}
        self.live = 0
        self.peak = 0
        self.starts = 0
        self.changes: list[tuple[float, int]] = [(loop.time(), 0)]
        self.expected = 0
        self.finished = 0
        self.all_done = asyncio.Event()

    async def start(self, launch: ContainerLaunch, on_exit: OnExit) -> int | None:
        container = _Container(self, launch.container_id, on_exit)
        self.containers[launch.container_id] = container
        self._started_at[launch.container_id] = self.loop.time()
        self.starts += 1
        self.live += 1
        self.peak = max(self.peak, self.live)
        self.changes.append((self.loop.time(), self.live))
        self.loop.call_later(next(self._startups), self._ready, container)
        return None

    def _ready(self, container: _Container) -> None:
        if container.gone:
            return
        container.handle = self.pool.attach(container.container_id, container)  # type: ignore[arg-type]
        if container.handle is None:
            self.exited(container, 0)
            return
        self.pool.on_message(container.handle, Ready())

    async def stop(self, container_id: str, grace: float) -> None:
        container = self.containers.get(container_id)
        if container is not None and not container.gone:
            self.loop.call_soon(self.exited, container, 0)

    def list(self) -> list[str]:
        return [c.container_id for c in self.containers.values() if not c.gone]

    def exited(self, container: _Container, code: int) -> None:
        if container.gone:
            return
        container.gone = True
        self.live -= 1
        self.changes.append((self.loop.time(), self.live))
        self.lifetimes.append(self.loop.time() - self._started_at[container.container_id])
        container.on_exit(container.container_id, code)

    def submit(self, index: int, run: float) -> None:
        record = self.pool.submit_many([str(index).encode()], self._done)[0]
        self._runs[record.input_id] = run
        self._arrived[record.input_id] = self.loop.time()

    def _done(self, record: InputRecord) -> None:
        self.finished += 1
        if self.finished >= self.expected:
            self.all_done.set()

    def run_time(self, item: Input) -> float:
        return self._runs.pop(item.input_id, 0.0)

    def dispatched(self, item: Input) -> None:
        arrived = self._arrived.pop(item.input_id, None)
        if arrived is not None:
            self.waits.append(self.loop.time() - arrived)

    def still_running(self) -> float:
        """Container-seconds of the containers that have not exited, until now."""
        now = self.loop.time()
        return sum(
            now - self._started_at[c.container_id] for c in self.containers.values() if not c.gone
        )


def _launch(container_id: str, label: str, grant: Grant | None) -> ContainerLaunch:
    return ContainerLaunch(container_id=container_id, label=label, address="", token="")


def replay(recording: Recording, scaling: Scaling, input_timeout: float = 300.0) -> Outcome:
    """Replay ``recording`` through a pool of ``scaling`` on a virtual clock. The run
    ends once every input has finished and the pool has scaled down as far as it
    will (``min_containers`` stay, and count until then)."""
    loop = VirtualLoop()
    try:
        return loop.run_until_complete(_replay(loop, recording, scaling, input_timeout))
    finally:
        loop.close()


async def _replay(
    loop: asyncio.AbstractEventLoop, recording: Recording, scaling: Scaling, input_timeout: float
) -> Outcome:
    startups = [startup for _, _, startup in recording.containers if startup >= 0]
    fleet = _Fleet(loop, startups)
    spec = FunctionSpec(name="replay", scaling=scaling, timeout=input_timeout)
    code = CodeRef(module_kind="import", module_name="", module_file="", sys_path=(), qualname="")
    pool = Pool(spec, code, fleet, _launch, clock=loop.time)
    fleet.pool = pool
    pool.start()
    inputs = sorted(recording.inputs)
    fleet.expected = len(inputs)
    begin = inputs[0][0] if inputs else 0.0
    start = loop.time()
    for index, (arrived, _, run) in enumerate(inputs):
        loop.call_at(start + arrived - begin, fleet.submit, index, run)
    if inputs:
        await fleet.all_done.wait()
    # Let the pool scale down as it would: past the window, the idle ones go.
    await asyncio.sleep(scaling.scaledown_window + 1.0)
    await asyncio.sleep(0)
    outcome = Outcome(
        container_seconds=sum(fleet.lifetimes) + fleet.still_running(),
        wait_p50=_quantile(fleet.waits, 0.50),
        wait_p99=_quantile(fleet.waits, 0.99),
        cold_starts=fleet.starts,
        peak_containers=fleet.peak,
        inputs=len(inputs),
        containers=_thinned([(t - start, n) for t, n in fleet.changes]),
    )
    await pool.stop()
    return outcome


def measured(recording: Recording) -> Outcome:
    """The recorded run's own figures, measured as a replay's are."""
    containers = recording.containers
    edges = sorted(
        [(started, 1) for started, _, _ in containers]
        + [(started + lifetime, -1) for started, lifetime, _ in containers]
    )
    live = peak = 0
    begin = min(arrived for arrived, _, _ in recording.inputs) if recording.inputs else 0.0
    series: list[tuple[float, int]] = [(0.0, 0)]
    for at, step in edges:
        live += step
        peak = max(peak, live)
        series.append((max(0.0, at - begin), live))
    waits = [wait for _, wait, _ in recording.inputs]
    return Outcome(
        container_seconds=sum(lifetime for _, lifetime, _ in containers),
        wait_p50=_quantile(waits, 0.50),
        wait_p99=_quantile(waits, 0.99),
        cold_starts=len(containers),
        peak_containers=peak,
        inputs=len(recording.inputs),
        containers=_thinned(series),
    )


def scaling_with(base: Scaling, changes: Mapping[str, Any]) -> Scaling:
    """``base`` with ``changes`` (names as ``shoal simulate`` takes them).

    Raises:
        InvalidError: an unknown setting or a value out of range.
    """
    from shoal.exception import InvalidError

    unknown = sorted(set(changes) - set(SETTINGS))
    if unknown:
        raise InvalidError(f"cannot simulate {unknown}: the settings are {list(SETTINGS)}")
    given = dict(changes)
    if "max_inputs" in given and "target_inputs" not in given:
        given["target_inputs"] = None  # the new max_inputs sets the target too
    fields = {
        "max_inputs": base.max_inputs,
        "target_inputs": base.target_inputs,
        "scaledown_window": base.scaledown_window,
        "buffer_containers": base.buffer_containers,
        "min_containers": base.min_containers,
        "max_containers": base.max_containers,
        **given,
    }
    return Scaling(**fields)


def _thinned(series: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """At most :data:`POINTS` of ``series``, the highest count of each stretch kept."""
    if len(series) <= POINTS:
        return series
    step = len(series) / POINTS
    out = []
    for i in range(POINTS):
        part = series[int(i * step) : int((i + 1) * step)] or [series[-1]]
        out.append((part[0][0], max(n for _, n in part)))
    return out


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    ranked = sorted(values)
    return ranked[round(q * (len(ranked) - 1))]
