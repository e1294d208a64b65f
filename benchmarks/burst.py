"""burst-sync / burst-async: a burst of sleeping inputs from zero containers (ideal 1.0 s)."""

from __future__ import annotations

import threading
import time

from benchmarks.apps import app, sleep_async, sleep_sync
from benchmarks.report import Result


def _python_start() -> float:
    import subprocess
    import sys

    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - started


def run(name: str, quick: bool) -> Result:
    result = Result(name)
    result.baseline["python_c_pass_s"] = _python_start()
    if name == "burst-sync":
        fn, n, expect = sleep_sync, 100, 5
    else:
        fn, n, expect = sleep_async, 1_000 if quick else 5_000, 5
    with app.run():
        peak = 0
        all_ready_at: list[float] = []
        stop = threading.Event()

        def watch() -> None:
            nonlocal peak
            while not stop.is_set():
                stats = fn.stats()
                peak = max(peak, stats.containers)
                if stats.ready >= expect and not all_ready_at:
                    all_ready_at.append(time.perf_counter())
                time.sleep(0.001)

        watcher = threading.Thread(target=watch)
        started = time.perf_counter()
        watcher.start()
        list(fn.map(range(n)))
        wall = time.perf_counter() - started
        stop.set()
        watcher.join()
        started_total = fn.stats().containers_started
    result.figures["wall_s"] = wall
    result.figures["peak_containers"] = float(max(peak, started_total))
    if all_ready_at:
        result.figures[f"until_{expect}_ready_s"] = all_ready_at[0] - started
    result.notes = f"{n} inputs; ideal wall 1.0 s"
    return result
