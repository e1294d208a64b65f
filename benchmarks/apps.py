"""The functions the benchmarks call."""

from __future__ import annotations

import asyncio
import time

import shoal

app = shoal.App("bench")


@app.function(max_containers=2)
@shoal.concurrent(max_inputs=64)
def noop(x: int) -> int:
    return x


@app.function()
def noop_cold(x: int) -> int:
    return x


@app.function()
@shoal.concurrent(max_inputs=20)
def sleep_sync(_: int) -> None:
    time.sleep(1)


@app.function(max_containers=5)
@shoal.concurrent(max_inputs=1000)
async def sleep_async(_: int) -> None:
    await asyncio.sleep(1)


def plain_noop(x: int) -> int:
    """The same no-op, for the ProcessPoolExecutor baseline."""
    return x
