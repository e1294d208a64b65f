"""observability: what the dashboard's stream and a ``/metrics`` scrape cost the server.

Three measurements, each beside its own baseline in the same run:

- The dashboard's timeline (``server/timeline.py``) at 1 input a second and at 20,000:
  100 functions of 10 containers each, fed one second of events at each rate (the
  bus's real batches: 1 input at a time, or batches of 200), then one tick. The tick's
  cost, which makes everything the live stream sends, must not grow with the input
  rate (O(functions)); the per-input cost of hearing the events is reported beside.
- A ``/metrics`` scrape of 100 functions and 1,000 containers (the real ``Metrics``
  over pools that answer ``stats()`` and ``containers()``; goal < 50 ms).
- The bytes the stream sends a second for those 100 functions, at both rates.

Pools here are stand-ins answering the two read-only calls the subscribers make
(``stats()``, ``containers()``): a unit of pure bookkeeping, measured without processes.
The cost of everything switched on for a real ``.map`` and ``.remote()`` is the
``events`` workload's "observability" figures.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

from benchmarks.report import Result
from shoal.control.events import EventBus
from shoal.server.metrics import Metrics
from shoal.server.timeline import Timeline
from shoal.spec.events import ContainerStarting, InputsFinished
from shoal.spec.function import FunctionSpec, Scaling
from shoal.spec.stats import FunctionStats

FUNCTIONS = 100
CONTAINERS = 10  # each


class _Pool:
    """What the subscribers read of a pool: its spec, stats() and containers()."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.spec = FunctionSpec(name=key.rsplit(".", 1)[-1], scaling=Scaling(max_inputs=100))
        self._containers = [
            {"id": f"{key}-c{i}", "state": "ready", "pid": None, "running": i % 3, "node": ""}
            for i in range(CONTAINERS)
        ]

    def stats(self) -> FunctionStats:
        return FunctionStats(
            queued=5,
            running=12,
            containers=CONTAINERS,
            ready=CONTAINERS,
            containers_started=CONTAINERS,
        )

    def containers(self) -> list[dict[str, Any]]:
        return self._containers


def _pools() -> dict[str, Any]:
    return {f"app{i % 10}.v1.f{i}": _Pool(f"app{i % 10}.v1.f{i}") for i in range(FUNCTIONS)}


def _second(bus: EventBus, pools: dict[str, Any], rate: int) -> float:
    """Publish one second's worth of ``rate`` inputs over all functions; its seconds."""
    channel = bus.channel(InputsFinished)
    batch = 1 if rate < FUNCTIONS else 200
    batches = max(1, rate // batch)
    keys = list(pools)
    waits = [0.001] * batch
    started = time.perf_counter()
    for i in range(batches):
        key = keys[i % len(keys)]
        ids = [f"in-{i}-{j}" for j in range(batch)]
        channel.publish(InputsFinished(key, f"{key}-c{i % CONTAINERS}", ids, waits, waits, 0.0))
    return time.perf_counter() - started


def run(name: str, quick: bool) -> Result:
    seconds = 5 if quick else 20
    result = Result(name)
    pools = _pools()
    bus = EventBus()
    timeline = Timeline(bus, lambda: pools)
    starting = bus.channel(ContainerStarting)
    for key, pool in pools.items():
        for row in pool.containers():
            starting.publish(ContainerStarting(key, row["id"], 0.0))
    ticks: dict[int, list[float]] = {1: [], 20_000: []}
    hears: dict[int, list[float]] = {1: [], 20_000: []}
    sent: dict[int, int] = {}
    for _ in range(seconds):
        for rate in (1, 20_000):
            hears[rate].append(_second(bus, pools, rate) / rate)
            started = time.perf_counter()
            points = timeline.tick()
            ticks[rate].append(time.perf_counter() - started)
            sent[rate] = len(json.dumps({"t": 0.0, "points": points}, separators=(",", ":")))
    result.baseline["tick_ms_at_1_input_per_s"] = statistics.median(ticks[1]) * 1000
    result.figures["tick_ms_at_20000_inputs_per_s"] = statistics.median(ticks[20_000]) * 1000
    result.figures["tick_ratio_20000_vs_1"] = statistics.median(ticks[20_000]) / statistics.median(
        ticks[1]
    )
    result.figures["hear_us_per_input_at_20000"] = statistics.median(hears[20_000]) * 1e6
    result.figures["stream_bytes_per_s_at_1"] = float(sent[1])
    result.figures["stream_bytes_per_s_at_20000"] = float(sent[20_000])
    timeline.unsubscribe()

    metrics = Metrics(bus, lambda: pools)
    _second(bus, pools, 20_000)
    scrapes = []
    for _ in range(5 if quick else 20):
        started = time.perf_counter()
        body = metrics.scrape()
        scrapes.append(time.perf_counter() - started)
    assert b'shoal_containers{app="app0",function="f0",state="busy"}' in body
    result.figures["scrape_ms_100_functions_1000_containers"] = statistics.median(scrapes) * 1000
    result.figures["scrape_bytes"] = float(len(body))
    result.notes = (
        f"{FUNCTIONS} functions x {CONTAINERS} containers; {seconds} simulated seconds a rate; "
        "medians; scrape goal < 50 ms"
    )
    return result
