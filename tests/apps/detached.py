"""Modal's scatter_gather, run with ``shoal run --detach``: the entrypoint spawns the work
and returns, and the spawned work prints the gathered result."""

import time

import shoal

app = shoal.App("scatter")


@app.function()
@shoal.concurrent(max_inputs=10)
def part(i: int) -> int:
    time.sleep(0.5)
    return i * i


@app.function()
def gather(n: int, hold: float = 0.0) -> None:
    total = sum(part.map(range(n)))
    time.sleep(hold)
    print(f"gathered {total}", flush=True)


@app.local_entrypoint()
def main(n: int = 4, hold: float = 0.0) -> None:
    gather.spawn(n, hold)
    print("spawned", flush=True)
