"""events: what the event bus costs a ``.map``, with nobody listening, with one
subscriber that counts every event and every input in it, and with everything a
server subscribes switched on: its Prometheus metrics (``server/metrics.py``), the
dashboard's timeline (``server/timeline.py``, ticking once a second) and the traffic
recorder of ``shoal simulate`` (``server/recorder.py``, writing once a second).

The map of ``map_throughput`` (no-op inputs on 2 containers, embedded server) runs
in rounds ordered A B C C B A ... (A: no subscriber, B: the counting subscriber, C:
everything on), so a drift of the machine's speed falls on all alike; the figures
are ratios of the medians. Beside it, a deterministic count: Python calls per input on the control
plane's loop (``sys.setprofile`` on that thread) in one map of each kind.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from types import FrameType
from typing import Any

from benchmarks.apps import app, noop
from benchmarks.report import Result
from shoal import bridge
from shoal.server import embedded
from shoal.server.metrics import Metrics, labels_of
from shoal.server.recorder import Recorder
from shoal.server.timeline import Timeline


class Counting:
    """Counts every event by type, and every input the batched ones carry."""

    def __init__(self) -> None:
        self.events: Counter[str] = Counter()
        self.inputs = 0

    def __call__(self, event: Any) -> None:
        self.events[type(event).__name__] += 1
        self.inputs += len(getattr(event, "input_ids", ()))


def _everything(server: Any, root: str) -> Callable[[], None]:
    """Subscribe what a server runs (metrics, timeline, recorder) and tick the last two
    once a second on the server's loop, as a server does; the function returned stops it."""
    bus, loop = server.control.events, bridge.background_loop()
    metrics = Metrics(bus, server.control.pools)
    timeline = Timeline(bus, server.control.pools)
    recorder = Recorder(bus, root, 200_000, labels_of)
    handle: list[Any] = []

    def tick() -> None:
        timeline.tick()
        recorder.flush()
        handle[:] = [loop.call_later(1.0, tick)]

    loop.call_soon_threadsafe(lambda: handle.append(loop.call_later(1.0, tick)))

    def stop() -> None:
        done = threading.Event()

        def cancel() -> None:
            for h in handle:
                h.cancel()
            done.set()

        loop.call_soon_threadsafe(cancel)
        done.wait(10)
        for subscriber in (metrics, timeline, recorder):
            subscriber.unsubscribe()
        assert b"shoal_inputs_total" in metrics.scrape()

    return stop


def _rate(n: int) -> float:
    started = time.perf_counter()
    list(noop.map(range(n)))
    return n / (time.perf_counter() - started)


def _loop_calls(n: int) -> int:
    """Python calls on the control plane's loop thread during one map of ``n``."""
    loop = bridge.background_loop()
    count = [0]

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call":
            count[0] += 1

    def on_loop(hook: Callable[..., object] | None) -> None:
        done = threading.Event()

        def install() -> None:
            sys.setprofile(hook)
            done.set()

        loop.call_soon_threadsafe(install)
        done.wait(10)

    on_loop(profile)
    try:
        list(noop.map(range(n)))
    finally:
        on_loop(None)
    return count[0]


def run(name: str, quick: bool) -> Result:
    n = 5_000 if quick else 20_000
    rounds = 2 if quick else 4
    result = Result(name)
    plain: list[float] = []
    counted: list[float] = []
    metered: list[float] = []
    counting = Counting()
    root = tempfile.mkdtemp(prefix="shoal-bench-recordings-")
    with app.run():
        server = embedded.running()
        assert server is not None
        bus = server.control.events
        list(noop.map(range(2_000)))  # both containers up and warm
        for i in range(rounds):
            for kind in "ABC" if i % 2 == 0 else "CBA":
                if kind == "B":
                    unsubscribe = bus.subscribe(counting)
                    counted.append(_rate(n))
                    unsubscribe()
                elif kind == "C":
                    stop = _everything(server, root)
                    metered.append(_rate(n))
                    stop()
                else:
                    plain.append(_rate(n))
        calls_plain = _loop_calls(2_000)
        unsubscribe = bus.subscribe(Counting())
        calls_counted = _loop_calls(2_000)
        unsubscribe()
        stop = _everything(server, root)
        calls_metered = _loop_calls(2_000)
        stop()
    assert counting.inputs >= 3 * n * len(counted)  # queued, dispatched, finished: each input
    result.baseline["no_subscriber_inputs_per_s"] = statistics.median(plain)
    result.figures["counting_subscriber_inputs_per_s"] = statistics.median(counted)
    result.figures["ratio_vs_no_subscriber"] = statistics.median(counted) / statistics.median(plain)
    result.figures["everything_on_inputs_per_s"] = statistics.median(metered)
    result.figures["everything_on_ratio_vs_no_subscriber"] = statistics.median(
        metered
    ) / statistics.median(plain)
    result.baseline["loop_calls_per_input_no_subscriber"] = calls_plain / 2_000
    result.figures["loop_calls_per_input_counting"] = calls_counted / 2_000
    result.figures["loop_calls_per_input_everything_on"] = calls_metered / 2_000
    result.figures["events_per_input"] = sum(counting.events.values()) / (n * len(counted))
    shutil.rmtree(root, ignore_errors=True)
    result.notes = (
        f"{n} inputs, {rounds * 3} rounds A B C C B A (medians); "
        "calls counted over one map of 2,000"
    )
    return result
