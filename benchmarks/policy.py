"""policy: the real Pool, with its dispatcher and autoscaler, replayed against a simulated fleet.

A backend that starts containers instantly and a connection that records what
the pool sends stand in for processes; the clock is virtual. The replay fills
10,000 containers with 1,000,000 inputs, then interleaves completions with new
arrivals, then stops traffic and lets the fleet idle out. Every event is one
scheduling decision (dispatch plus autoscaling); the table reports its mean cost.

The simulator keeps its own count of inputs on each container, from what the
pool sent and what it answered, and checks after every event that no container
holds more than ``max_inputs`` and that no input waits while a ready container
has a free slot.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from benchmarks.report import Result
from shoal.backends.base import Backend, ContainerLaunch, OnExit
from shoal.control.calls import InputRecord
from shoal.control.pool import Pool
from shoal.protocol.messages import (
    Input,
    Many,
    Message,
    Output,
    OutputStatus,
    Ready,
    Shutdown,
)
from shoal.spec.function import CodeRef, FunctionSpec, Scaling
from shoal.spec.resources import Grant

MAX_INPUTS = 100


class SimulatedFleet(Backend):
    """Starts containers instantly; remembers them until stopped."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.stopped: set[str] = set()

    async def start(self, launch: ContainerLaunch, on_exit: OnExit) -> int | None:
        self.started.append(launch.container_id)
        return None

    async def stop(self, container_id: str, grace: float) -> None:
        self.stopped.add(container_id)

    def list(self) -> list[str]:
        return [c for c in self.started if c not in self.stopped]


class Conn:
    """Stands in for a container's connection: counts what it holds."""

    def __init__(self, sim: Simulator, container_id: str) -> None:
        self.sim = sim
        self.container_id = container_id
        self.holding: list[str] = []

    def send(self, message: Message) -> None:
        if isinstance(message, Input) or (isinstance(message, Many) and message.of(Input)):
            ids = message.columns[0] if isinstance(message, Many) else [message.input_id]
            self.holding += ids
            if len(self.holding) > MAX_INPUTS:
                raise AssertionError(f"{self.container_id} holds {len(self.holding)} inputs")
            if len(self.holding) == MAX_INPUTS:
                self.sim.with_free_slot.discard(self.container_id)
        elif isinstance(message, Shutdown):
            self.sim.with_free_slot.discard(self.container_id)
            self.sim.shut_down.add(self.container_id)

    def send_now(self, message: Message) -> None:
        self.send(message)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class Simulator:
    def __init__(self, containers: int) -> None:
        self.now = 0.0
        self.fleet = SimulatedFleet()
        spec = FunctionSpec(
            name="sim",
            scaling=Scaling(max_inputs=MAX_INPUTS, max_containers=containers, scaledown_window=60),
        )
        code = CodeRef(
            module_kind="import", module_name="x", module_file="", sys_path=(), qualname="f"
        )
        self.pool = Pool(spec, code, self.fleet, self._launch, clock=lambda: self.now)
        self.conns: dict[str, Conn] = {}
        self.with_free_slot: set[str] = set()
        self.shut_down: set[str] = set()
        self.handles: dict[str, Any] = {}
        self.done = 0
        self.events = 0
        self.event_time = 0.0
        self.attached = 0
        self.busy: list[str] = []

    def _launch(self, container_id: str, label: str, grant: Grant | None) -> ContainerLaunch:
        return ContainerLaunch(container_id=container_id, label=label, address="", token="")

    def on_done(self, record: InputRecord) -> None:
        self.done += 1

    def timed(self, action: Any, *args: Any) -> None:
        started = time.perf_counter()
        action(*args)
        self.event_time += time.perf_counter() - started
        self.events += 1
        self.check()

    def check(self) -> None:
        if self.pool.stats().queued and self.with_free_slot:
            raise AssertionError("an input waits while a ready container has a free slot")

    async def bring_up(self) -> None:
        """Let the pool's start tasks run, then connect and ready every new container."""
        await asyncio.sleep(0)
        for container_id in self.fleet.started[self.attached :]:
            conn = Conn(self, container_id)
            handle = self.pool.attach(container_id, conn)  # type: ignore[arg-type]
            assert handle is not None
            self.conns[container_id] = conn
            self.handles[container_id] = handle
            self.with_free_slot.add(container_id)
            self.timed(self.pool.on_message, handle, Ready())
        self.attached = len(self.fleet.started)

    def complete_one(self, rng: random.Random) -> None:
        container_id = rng.choice(self.busy)
        conn = self.conns[container_id]
        if not conn.holding:
            return
        input_id = conn.holding.pop(rng.randrange(len(conn.holding)))
        if container_id not in self.shut_down:
            self.with_free_slot.add(container_id)
        self.now += 0.0001
        output = Output(input_id, int(OutputStatus.OK), b"", False)
        self.timed(self.pool.on_message, self.handles[container_id], output)

    def submit(self, n: int) -> None:
        self.now += 0.0001
        self.timed(self.pool.submit_many, [b""] * n, self.on_done)


async def simulate(containers: int, inputs: int, replay: int) -> Result:
    sim = Simulator(containers)
    rng = random.Random(7)
    for _ in range(inputs // 1000):  # arrivals in bursts of a thousand
        sim.submit(1000)
        await sim.bring_up()
    fill_events, fill_time = sim.events, sim.event_time
    assert sim.pool.stats().running == inputs, sim.pool.stats()
    sim.busy = list(sim.conns)
    for i in range(replay):  # steady state: completions, with one arrival per completion
        sim.complete_one(rng)
        if i % 2 == 0:
            sim.submit(1)
    steady_events, steady_time = sim.events - fill_events, sim.event_time - fill_time
    while any(c.holding for c in sim.conns.values()):  # drain, then idle out
        for conn in sim.conns.values():
            while conn.holding:
                sim.busy = [conn.container_id]
                sim.complete_one(rng)
    sim.now += 61
    sim.submit(0)
    await asyncio.sleep(0)
    result = Result("policy")
    result.figures["containers_peak"] = float(len(sim.fleet.started))
    result.figures["fill_us_per_input"] = fill_time / inputs * 1e6
    result.figures["decision_us_steady"] = steady_time / steady_events * 1e6
    result.figures["decision_us_all"] = sim.event_time / sim.events * 1e6
    result.figures["decisions"] = float(sim.events)
    result.figures["stopped_after_idle"] = float(len(sim.shut_down))
    assert sim.done == inputs + replay // 2, sim.done  # every input finished exactly once
    await sim.pool.stop()
    return result


def run(name: str, quick: bool) -> Result:
    containers, inputs, replay = (1_000, 100_000, 20_000) if quick else (10_000, 1_000_000, 200_000)
    result = asyncio.run(simulate(containers, inputs, replay))
    result.name = name
    result.notes = (
        f"{containers:,} containers x {MAX_INPUTS} slots, {inputs:,} inputs; "
        "invariants held at every decision"
    )
    return result
