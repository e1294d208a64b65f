"""cold-start: first result from an app with no containers; ten containers ready.

Measured twice: containers as fresh interpreters (SHOAL_FORK_SERVER=0) and forked
from the pre-warmed fork server (given a second after the app starts to import).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from benchmarks.apps import app, noop_cold
from benchmarks.report import Result

#: Seconds the fork server gets to import Shoal and the module before timing starts.
WARM_UP = 1.0


@contextmanager
def fork_server(enabled: bool) -> Iterator[None]:
    before = os.environ.get("SHOAL_FORK_SERVER")
    os.environ["SHOAL_FORK_SERVER"] = "1" if enabled else "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ["SHOAL_FORK_SERVER"]
        else:
            os.environ["SHOAL_FORK_SERVER"] = before


def _first_result_ms(samples: int, forked: bool) -> float:
    firsts = []
    for _ in range(samples):
        with app.run():
            if forked:
                time.sleep(WARM_UP)
            began = time.perf_counter()
            noop_cold.remote(1)
            firsts.append(time.perf_counter() - began)
    return statistics.median(firsts) * 1e3


def _ten_ready_ms(forked: bool) -> float:
    with app.run():
        if forked:
            time.sleep(WARM_UP)
        began = time.perf_counter()
        noop_cold.update_autoscaler(min_containers=10)
        while noop_cold.stats().ready < 10:
            time.sleep(0.001)
        return (time.perf_counter() - began) * 1e3


def run(name: str, quick: bool) -> Result:
    samples = 3 if quick else 10
    result = Result(name)
    starts = []
    for _ in range(samples):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        starts.append(time.perf_counter() - began)
    result.baseline["python_c_pass_ms"] = statistics.median(starts) * 1e3
    for forked, label in ((False, "fresh"), (True, "forked")):
        with fork_server(forked):
            result.figures[f"first_result_ms_{label}"] = _first_result_ms(samples, forked)
            result.figures[f"ten_ready_ms_{label}"] = _ten_ready_ms(forked)
    result.notes = f"median of {samples}; forked = pre-warmed fork server"
    return result
