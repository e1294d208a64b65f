"""A deployed app for the service tests: plain, generator, failing, class, web, scheduled."""

import asyncio
import os
import time

import service_helper

import shoal

app = shoal.App("svc")


@app.function()
@shoal.concurrent(max_inputs=100)
def square(x: int) -> int:
    print("squaring", x)
    return service_helper.times(x, x)


@app.function()
@shoal.concurrent(max_inputs=100)
def slow(seconds: float) -> str:
    time.sleep(seconds)
    return f"slept {seconds} in {os.getpid()}"


@app.function()
@shoal.concurrent(max_inputs=10)
async def nap(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "woke"


@app.function(max_containers=2)
@shoal.concurrent(max_inputs=50)
def work(seconds: float) -> str:
    time.sleep(seconds)
    return f"worked {seconds}"


@app.function()
def count(n: int):
    yield from range(n)


class Refused(Exception):
    """An exception class only the app's own module defines."""


@app.function()
def refuse(reason: str) -> None:
    raise Refused(reason)


@app.cls()
class Greeter:
    name: str = shoal.parameter(default="anon")

    @shoal.method()
    def hello(self, who: str) -> str:
        return f"{self.name} greets {who}"


@app.function()
@shoal.concurrent(max_inputs=50)
@shoal.fastapi_endpoint()
def version() -> dict:
    return {"version": service_helper.VERSION}


@app.function(schedule=shoal.Period(seconds=1))
def tick() -> None:
    folder = os.environ.get("SVC_TICKS")
    if folder:
        with open(os.path.join(folder, f"{time.time_ns()}"), "w"):
            pass


@app.function()
def whoami() -> str | None:
    return shoal.current_function_call_id()
