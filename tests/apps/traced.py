"""A call tree for the tracing test: an input that maps and spawns, one retried, one failing."""

import os

import shoal

app = shoal.App("traced")


@app.function()
def inner(x: int) -> int:
    return x * 2


@app.function()
def outer(n: int) -> int:
    total = sum(inner.map(range(n)))
    return total + inner.spawn(100).get()


@app.function(retries=shoal.Retries(max_retries=1, initial_delay=0.0))
def flaky(marker: str) -> str:
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first time fails")
    return "second time works"


@app.function()
def broken() -> None:
    raise ValueError("always")
