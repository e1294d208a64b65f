"""Modal-style: async functions that call Shoal's blocking methods, as Modal allows.

``main`` (on a server) also spawns from the async function and polls the call by id
with ``get(timeout=0)``; ``basic`` needs no server. Each prints one JSON line.
"""

import asyncio
import json
import time

import shoal as modal

app = modal.App("async-callers")
board = modal.Dict.from_name("shoal-test-async-callers", create_if_missing=True)


@app.function()
def double(x: int) -> int:
    return 2 * x


@app.function()
def slow(x: int) -> int:
    time.sleep(1.5)
    return 2 * x


@app.function()
async def calls_blocking(x: int) -> list:
    blocking = double.remote(x)  # blocks this function's loop, not the container
    awaited = await double.remote.aio(x + 1)
    board["seen"] = x
    return [blocking, awaited, board.get("seen")]


@app.function()
async def polls(x: int) -> list:
    call = slow.spawn(x)
    answers = []
    for _ in range(100):
        try:
            answers.append(modal.FunctionCall.from_id(call.object_id).get(timeout=0))
            break
        except TimeoutError:
            answers.append("not ready")
            await asyncio.sleep(0.1)
    return [call.object_id[:3], answers[0], answers[-1]]


@app.local_entrypoint()
def basic() -> None:
    print(json.dumps(calls_blocking.remote(5)))


@app.local_entrypoint()
def main() -> None:
    print(json.dumps([calls_blocking.remote(5), polls.remote(7)]))
