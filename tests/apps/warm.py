"""Functions whose pools keep containers without traffic."""

import os

import shoal
from apps.gate import wait_for

app = shoal.App("warm")


@app.function(min_containers=2)
def warm() -> int:
    return os.getpid()


@app.function(min_containers=1, scaledown_window=1)
def idles(gate: str) -> int:
    wait_for(gate)
    return os.getpid()


@app.function(max_containers=2)
def limited(gate: str) -> int:
    wait_for(gate)
    return os.getpid()


@app.function(buffer_containers=1, max_containers=5)
def buffered(gate: str) -> int:
    wait_for(gate)
    return os.getpid()


@app.function(max_containers=1)
@shoal.concurrent(max_inputs=4, target_inputs=2)
def bursty(gate: str) -> int:
    wait_for(gate)
    return os.getpid()


@app.function(keep_warm=1, concurrency_limit=3, container_idle_timeout=5)
def old_spelling() -> int:
    return os.getpid()


@app.function()
def adjustable() -> int:
    return os.getpid()


@app.function()
def parent(_: int = 0) -> int:
    return os.getppid()
