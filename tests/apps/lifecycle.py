"""Classes with lifecycle hooks, batched functions and generators."""

import asyncio
import os
import time
from pathlib import Path

import shoal
from apps.gate import wait_for

app = shoal.App("lifecycle")


@app.cls(scaledown_window=0.5)
@shoal.concurrent(max_inputs=8)
class Counter:
    label: str = shoal.parameter(default="a")
    exit_marker: str = shoal.parameter(default="")

    @shoal.enter()
    def start(self) -> None:
        self.enters = getattr(self, "enters", 0) + 1
        self.seen = 0

    @shoal.method()
    def hit(self) -> tuple[int, int, str]:
        time.sleep(0.05)
        return os.getpid(), self.enters, self.label

    @shoal.method()
    async def ahit(self) -> tuple[int, int, str]:
        await asyncio.sleep(0.01)
        return os.getpid(), self.enters, self.label

    @shoal.exit()
    def stop(self) -> None:
        if self.exit_marker:
            Path(self.exit_marker).write_text(str(os.getpid()))


@app.cls(max_containers=1)
class Scaler:
    factor: int = shoal.parameter(default=10)

    @shoal.method()
    @shoal.batched(max_batch_size=4, wait_ms=50)
    def scale(self, xs: list[int]) -> list[tuple[int, int]]:
        return [(x * self.factor, len(xs)) for x in xs]


@app.cls(max_containers=1)
class Batcher:
    """A batched method with no @shoal.method(), as Modal allows."""

    @shoal.batched(max_batch_size=4, wait_ms=20)
    def double(self, xs: list[int]) -> list[int]:
        return [2 * x for x in xs]


@app.cls()
class BrokenEnter:
    @shoal.enter()
    async def start(self) -> None:
        raise RuntimeError("the model file is missing (raised on purpose)")

    @shoal.method()
    def run(self) -> int:
        return 1


@app.function()
@shoal.batched(max_batch_size=8, wait_ms=100)
def sizes(xs: list[int]) -> list[int]:
    return [len(xs)] * len(xs)


@app.function()
@shoal.batched(max_batch_size=4, wait_ms=20)
async def wrong_length(xs: list[int]) -> list[int]:
    return xs[:-1]


@app.function()
@shoal.batched(max_batch_size=4, wait_ms=20)
def batch_fails(xs: list[int]) -> list[int]:
    raise ValueError(f"batch of {len(xs)} failed")


@app.function()
def count_to(n: int, gate: str):  # type: ignore[no-untyped-def]
    yield 1
    wait_for(gate)  # the caller opens the gate only after it has seen the first value
    yield from range(2, n + 1)


@app.function()
async def acount_to(n: int, gate: str):  # type: ignore[no-untyped-def]
    yield 1
    while not Path(gate).exists():  # noqa: ASYNC110, ASYNC240 - a file gate, in a test app
        await asyncio.sleep(0.01)
    for i in range(2, n + 1):
        yield i
