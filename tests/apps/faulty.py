"""Functions that misbehave on purpose, for the reliability suite (tests/reliability)."""

import asyncio
import os
import subprocess
import sys
import time

import shoal

app = shoal.App("faulty")


@app.function()
def exits(code: int) -> int:
    if code >= 0:
        sys.exit(code)
    return code


@app.function()
@shoal.concurrent(max_inputs=4)
async def interrupts(i: int) -> int:
    if i == 1:
        raise KeyboardInterrupt
    return i


class ExitOnUnpickle:
    """Unpickles into a SystemExit: a hostile payload for the caller's side."""

    def __reduce__(self) -> tuple[object, tuple[int]]:
        return (sys.exit, (4,))


class ExitingError(Exception):
    """An exception whose rebuilding at the caller raises SystemExit."""

    def __reduce__(self) -> tuple[object, tuple[int]]:
        return (sys.exit, (5,))


@app.function()
def returns_exit_on_unpickle() -> ExitOnUnpickle:
    return ExitOnUnpickle()


@app.function()
def raises_exit_on_unpickle() -> None:
    raise ExitingError("rebuilt as SystemExit")


@app.function()
@shoal.concurrent(max_inputs=8)
def poison(i: int, poisoned: int) -> int:
    """Kills its container every time for ``i == poisoned``; the others take a moment."""
    if i == poisoned:
        time.sleep(0.1)
        os._exit(9)
    time.sleep(0.3)
    return i * 10


@app.function()
def big_result(size: int) -> bytes:
    return b"x" * size


@app.function()
def big_exception(size: int) -> None:
    raise ValueError("x" * size)


@app.function()
def starts_child(marker: str, then_die: bool) -> int:
    """Starts ``sleep MARKER`` and leaves it running; optionally kills its own container."""
    child = subprocess.Popen(["sleep", marker])
    if then_die:
        os.kill(os.getpid(), 9)
    return child.pid


@app.function(max_containers=4)
@shoal.concurrent(max_inputs=10)
def double(i: int) -> int:
    time.sleep(0.002)
    return 2 * i


@app.function(max_containers=2)
@shoal.concurrent(max_inputs=64)
async def ident(i: int) -> int:
    return i


@app.function()
@shoal.concurrent(max_inputs=10)
async def double_async(i: int) -> int:
    await asyncio.sleep(0.001)
    return 2 * i


@app.function()
def quick(i: int) -> int:
    time.sleep(0.01)
    return i


@app.function()
def whereami() -> tuple[int, int]:
    """This container's pid and its parent's (the fork server, when forked)."""
    return os.getpid(), os.getppid()


@app.function()
def credentials(nap: float) -> tuple[int, str]:
    """After ``nap`` seconds: this container's pid and the token it proves itself with."""
    time.sleep(nap)
    return os.getpid(), os.environ["SHOAL_CONTAINER_TOKEN"]
