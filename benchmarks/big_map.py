"""big-map: a map fed by a generator over millions of inputs; memory must stay flat."""

from __future__ import annotations

import time
from collections.abc import Iterator

from benchmarks.apps import app, noop
from benchmarks.report import Result


def rss_mb() -> float:
    """This process's resident memory (the caller and, embedded, the control plane)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run(name: str, quick: bool) -> Result:
    n = 200_000 if quick else 2_000_000
    result = Result(name)
    marks: dict[str, float] = {}

    def inputs() -> Iterator[int]:
        yield from range(n)

    with app.run():
        list(noop.map(range(2_000)))
        result.baseline["rss_before_mb"] = rss_mb()
        started = time.perf_counter()
        count = 0
        for _ in noop.map(inputs(), order_outputs=False):
            count += 1
            if count == n // 10:
                marks["rss_at_10pct_mb"] = rss_mb()
        marks["rss_at_100pct_mb"] = rss_mb()
        elapsed = time.perf_counter() - started
    assert count == n
    result.figures.update(marks)
    result.figures["growth_mb"] = marks["rss_at_100pct_mb"] - result.baseline["rss_before_mb"]
    result.figures["inputs_per_s"] = n / elapsed
    result.notes = f"{n:,} inputs from a generator"
    return result
