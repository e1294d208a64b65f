"""Checked by mypy (not run): handles carry the user's signature.

Each ``# type: ignore[...]`` marks a call that must be a type error; mypy's
``warn_unused_ignores`` (part of --strict) fails the check if it is not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, assert_type

import shoal

app = shoal.App("typing")


@app.function()
def add(x: int, y: int = 1) -> int:
    return x + y


@app.function()
@shoal.concurrent(max_inputs=4)
async def shout(word: str) -> str:
    return word.upper()


async def uses_aio() -> None:
    assert_type(await add.remote.aio(1, y=2), int)
    assert_type(await shout.remote.aio("a"), str)
    assert_type(shout.map.aio(["a"]), AsyncIterator[str])
    assert_type(await add.stats.aio(), shoal.FunctionStats)
    await add.update_autoscaler.aio(min_containers=1)


def uses_sync() -> None:
    assert_type(add.remote(1), int)
    assert_type(shout.remote("a"), str)
    assert_type(add.spawn(1), shoal.FunctionCall[int])
    assert_type(add.spawn(1).get(timeout=1.0), int)
    assert_type(add.map([1, 2]), Iterator[int])
    assert_type(add.stats(), shoal.FunctionStats)
    assert_type(add.with_options(cpu=2).remote(1), int)
    assert_type(shoal.FunctionCall.gather(add.spawn(1)), list[Any])
    add.remote("one")  # type: ignore[arg-type]
    add.remote(1, z=3)  # type: ignore[call-arg]
    shout.remote(1)  # type: ignore[arg-type]
