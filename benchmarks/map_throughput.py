"""map: ``.map`` over many no-op inputs on 2 containers, against ProcessPoolExecutor(2)."""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor

from benchmarks.apps import app, noop, plain_noop
from benchmarks.report import Result


def _rate(n: int, run: object) -> float:
    started = time.perf_counter()
    run()  # type: ignore[operator]
    return n / (time.perf_counter() - started)


def run(name: str, quick: bool) -> Result:
    n = 5_000 if quick else 20_000
    result = Result(name)
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(plain_noop, range(200)))  # both workers up
        result.baseline["ppe_chunksize_1_per_s"] = _rate(
            n, lambda: list(pool.map(plain_noop, range(n), chunksize=1))
        )
        best = 0.0
        for chunksize in (16, 64, 256, 1024):
            rate = _rate(n, lambda c=chunksize: list(pool.map(plain_noop, range(n), chunksize=c)))
            best = max(best, rate)
        result.baseline["ppe_best_chunksize_per_s"] = best
    with app.run():
        list(noop.map(range(2_000)))  # both containers up and warm
        assert noop.stats().containers == 2
        rates = [_rate(n, lambda: list(noop.map(range(n)))) for _ in range(3)]
    result.figures["inputs_per_s"] = max(rates)
    result.figures["ratio_vs_best_ppe"] = max(rates) / best
    result.notes = f"{n} inputs, best of 3"
    return result
