"""Functions that call other functions from inside their containers."""

import os

import shoal

app = shoal.App("nested")


class NestedError(Exception):
    pass


@app.function()
@shoal.concurrent(max_inputs=8)
def double(x: int) -> int:
    return 2 * x


@app.function()
def explode(message: str) -> None:
    raise NestedError(message)


@app.function()
def count(n: int):  # type: ignore[no-untyped-def]
    yield from range(n)


@app.function()
def outer_sync(n: int) -> tuple[int, int, int]:
    """Calls double on every input with a map, and one remote: from a worker thread."""
    total = sum(double.map(range(n)))
    return total, double.remote(n), os.getpid()


@app.function()
async def outer_async(x: int) -> int:
    return await double.remote.aio(x) + 1


@app.function()
def outer_failing() -> str:
    try:
        explode.remote("deep down")
    except NestedError as exc:
        return f"caught {exc}"
    return "not raised"


@app.function()
def outer_generator(n: int) -> list[int]:
    return list(count.remote_gen(n))


@app.function()
@shoal.fastapi_endpoint()
async def doubled(x: int) -> dict:  # type: ignore[type-arg]
    return {"doubled": await double.remote.aio(x)}
