"""Inputs that print at once, on threads and in asyncio tasks, in pieces: whose line is whose."""

import asyncio
import time

import shoal

app = shoal.App("talk")


@app.function()
@shoal.concurrent(max_inputs=8)
def chat(n: int) -> str:
    print("chat", n, end="")  # half a line: the other inputs print before it ends
    time.sleep(0.05)
    print(" one")
    print("chat", n, "two", flush=True)
    return shoal.current_function_call_id() or ""


@app.function()
@shoal.concurrent(max_inputs=8)
async def achat(n: int) -> str:
    print("achat", n, end="")
    await asyncio.sleep(0.05)
    print(" one")
    print("achat", n, "two")
    return shoal.current_function_call_id() or ""
