"""Functions for the concurrency, scaling and fault tests."""

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

import shoal
from apps.gate import wait_for

app = shoal.App("basic")

_lock = threading.Lock()
_active = 0
_peak = 0


class CustomError(Exception):
    """Raised by ``fail`` so the caller can check the type survives the trip."""


@app.function(allow_concurrent_inputs=10)
def barrier_sync(n: int) -> tuple[int, int]:
    barrier = _barrier(n)
    barrier.wait(timeout=30)
    return os.getpid(), threading.get_ident()


_barriers: dict[int, threading.Barrier] = {}


def _barrier(n: int) -> threading.Barrier:
    with _lock:
        return _barriers.setdefault(n, threading.Barrier(n))


_async_barrier: asyncio.Barrier | None = None


@app.function(allow_concurrent_inputs=10)
async def barrier_async(n: int) -> tuple[int, int, str | None]:
    global _async_barrier
    if _async_barrier is None:
        _async_barrier = asyncio.Barrier(n)
    async with asyncio.timeout(30):
        await _async_barrier.wait()
    return os.getpid(), threading.get_ident(), shoal.current_input_id()


@app.function(max_containers=1)
@shoal.concurrent(max_inputs=3)
def peak(gate: str) -> int:
    """Records how many inputs ran at once in this container."""
    global _active, _peak
    with _lock:
        _active += 1
        _peak = max(_peak, _active)
    time.sleep(0.05)
    wait_for(gate)
    with _lock:
        _active -= 1
        return _peak


@app.function(max_containers=10, scaledown_window=60)
@shoal.concurrent(max_inputs=20)
def gated(gate: str) -> int:
    wait_for(gate)
    return os.getpid()


@app.function()
def echo(x: object) -> object:
    return x


@app.function()
def whoami() -> tuple[int, str | None, str | None]:
    return os.getpid(), shoal.current_function_call_id(), shoal.current_input_id()


@app.function()
def fail(message: str) -> None:
    raise CustomError(message)


@app.function()
def unpicklable_result() -> object:
    return threading.Lock()


@app.function(timeout=1)
def slow_sync() -> int:
    time.sleep(20)
    return os.getpid()


@app.function(timeout=1)
async def slow_async() -> int:
    await asyncio.sleep(20)
    return os.getpid()


@app.function()
def pid() -> int:
    return os.getpid()


@app.function(timeout=1)
async def pid_async() -> int:
    return os.getpid()


@app.function()
def die_once(marker: str) -> int:
    """SIGKILLs its own container the first time, then succeeds elsewhere."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return os.getpid()


@app.function()
def always_exit() -> None:
    os._exit(3)


@app.function(retries=shoal.Retries(max_retries=2, initial_delay=0.05, backoff_coefficient=1.0))
def flaky(counter: str, failures: int) -> int:
    """Fails ``failures`` times (counted in a file), then returns the attempt number."""
    with open(counter, "a") as f:
        f.write("x")
    with open(counter) as f:
        attempt = len(f.read())
    if attempt <= failures:
        raise CustomError(f"attempt {attempt}")
    return attempt


@app.function(allow_concurrent_inputs=4)
async def cancellable(gate: str) -> str:
    gate_file = Path(gate)
    for _ in range(3000):
        if gate_file.exists():  # noqa: ASYNC240 - a stat of a local file, in a test app
            return "finished"
        await asyncio.sleep(0.01)
    return "gave up"


@app.function()
def big_result(size: int) -> bytes:
    return b"x" * size


@app.function(max_containers=1)
@shoal.concurrent(max_inputs=16)
def echo_together(x: object) -> object:
    """An echo whose inputs share one container (they travel in batches)."""
    return x


_together = threading.Barrier(20, timeout=30)


@app.function(max_containers=1)
@shoal.concurrent(max_inputs=20)
def chorus(n: int) -> None:
    _together.wait()  # all 20 threads print at once
    for round in range(20):
        print("voice", n, "round", round, "of", 20)


@app.function()
def chatty(word: str) -> None:
    import sys

    print(f"out: {word}")
    print(f"err: {word}", file=sys.stderr)


@app.function(timeout=1)
async def blocks_its_loop() -> None:
    time.sleep(30)  # noqa: ASYNC251 - on purpose: the container cannot enforce its timeout
