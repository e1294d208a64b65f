"""Concurrent inputs in autoscaling pools: the three functions of the README.

    shoal run examples/quickstart.py

- ``sleep_sync``: ten inputs at once on ten threads of one container, ~1 s in all.
- ``sleep_async``: ten inputs at once as asyncio tasks on one thread, ~1 s in all.
- ``generate``: 100 inputs at 20 per container -> exactly 5 containers, ~1 s of work.
"""

import asyncio
import os
import threading
import time

import shoal

app = shoal.App("quickstart")


@app.function(allow_concurrent_inputs=10)  # 10 inputs at once, on 10 threads of one container
def sleep_sync(i: int) -> int:
    time.sleep(1)
    return threading.get_ident()


@app.function(allow_concurrent_inputs=10)  # 10 inputs at once, as asyncio tasks on one thread
async def sleep_async(i: int) -> int:
    await asyncio.sleep(1)
    return threading.get_ident()


@app.function(max_containers=10, scaledown_window=30)
@shoal.concurrent(max_inputs=20)
def generate(prompt: str) -> tuple[str, int]:
    time.sleep(1)
    return prompt.upper(), os.getpid()


@app.local_entrypoint()
def main(n: int = 100) -> None:
    started = time.perf_counter()
    threads = set(sleep_sync.map(range(10)))
    print(
        f"sleep_sync:  10 inputs on {len(threads)} threads in {time.perf_counter() - started:.2f} s"
    )

    started = time.perf_counter()
    threads = set(sleep_async.map(range(10)))
    print(
        f"sleep_async: 10 inputs on {len(threads)} thread in {time.perf_counter() - started:.2f} s"
    )

    started = time.perf_counter()
    results = list(generate.map(["a"] * n))
    containers = len({pid for _, pid in results})
    elapsed = time.perf_counter() - started
    print(f"generate:    {n} inputs on {containers} containers in {elapsed:.2f} s")
