"""cold-start: first result from an app with no containers; ten containers ready."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from benchmarks.apps import app, noop_cold
from benchmarks.report import Result


def run(name: str, quick: bool) -> Result:
    samples = 3 if quick else 10
    result = Result(name)
    starts = []
    for _ in range(samples):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        starts.append(time.perf_counter() - began)
    result.baseline["python_c_pass_ms"] = statistics.median(starts) * 1e3
    firsts = []
    for _ in range(samples):
        with app.run():
            began = time.perf_counter()
            noop_cold.remote(1)
            firsts.append(time.perf_counter() - began)
    result.figures["first_result_ms"] = statistics.median(firsts) * 1e3
    with app.run():
        began = time.perf_counter()
        noop_cold.update_autoscaler(min_containers=10)
        while noop_cold.stats().ready < 10:
            time.sleep(0.001)
        result.figures["ten_ready_ms"] = (time.perf_counter() - began) * 1e3
    result.notes = f"median of {samples}"
    return result
