"""dict: shoal.Dict operations from inside a container, against a socket round-trip floor.

A function puts and gets keys of a named Dict in a loop: a sync function from one
thread and from eight, an async function from one task and from 32 (``.aio``,
answered on the container's own loop). Every operation crosses from the container
to its control plane and, for a put, waits for its group commit to the store. The
baseline is the same number of round trips of a small message between two
processes over a Unix socket, measured in the same run.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import shoal
from benchmarks.latency import SocketFloor
from benchmarks.report import Result

app = shoal.App("bench-dict")
store = shoal.Dict.from_name("bench-dict", create_if_missing=True)


def _ops(worker: int, n: int) -> None:
    for i in range(n // 2):
        store[f"{worker}-{i % 100}"] = i
        store.get(f"{worker}-{i % 100}")


@app.function()
def hammer(n: int, threads: int) -> float:
    """``n`` operations per thread (half puts, half gets); returns operations per second."""
    _ops(0, 200)  # warm
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(_ops, range(threads), [n] * threads))
    return n * threads / (time.perf_counter() - started)


async def _ops_async(worker: int, n: int) -> None:
    for i in range(n // 2):
        await store.put.aio(f"{worker}-{i % 100}", i)
        await store.get.aio(f"{worker}-{i % 100}")


@app.function()
async def hammer_async(n: int, tasks: int = 1) -> float:
    """``n`` operations per task; returns operations per second."""
    await _ops_async(0, 200)
    started = time.perf_counter()
    await asyncio.gather(*(_ops_async(task, n) for task in range(tasks)))
    return n * tasks / (time.perf_counter() - started)


def run(name: str, quick: bool) -> Result:
    n = 2_000 if quick else 10_000
    result = Result(name)
    floor = SocketFloor()
    floor.sample(200)
    samples = floor.sample(n)
    floor.close()
    result.baseline["round_trips_per_s"] = len(samples) / sum(samples)
    with app.run():
        result.figures["ops_per_s_1_thread"] = hammer.remote(n, 1)
        result.figures["ops_per_s_8_threads"] = hammer.remote(n // 4, 8)
        result.figures["ops_per_s_1_task"] = hammer_async.remote(n)
        result.figures["ops_per_s_32_tasks"] = hammer_async.remote(n // 16, 32)
    result.figures["vs_floor_1_thread"] = (
        result.figures["ops_per_s_1_thread"] / result.baseline["round_trips_per_s"]
    )
    result.notes = f"{n} ops in a container (half durable puts, half gets) on a named Dict"
    return result
