"""Decorators that annotate a user's function before ``@app.function`` takes it.

They only record options on the function object; ``@app.function`` reads them.
Stack them below ``@app.function``::

    @app.function(max_containers=10)
    @shoal.concurrent(max_inputs=20, target_inputs=16)
    def fetch(url: str) -> int: ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from shoal.exception import InvalidError

F = TypeVar("F", bound=Callable[..., Any])

#: Attribute holding the options ``@shoal.concurrent`` recorded.
CONCURRENT_ATTR = "__shoal_concurrent__"


@dataclass(frozen=True, slots=True)
class Concurrency:
    """What ``@shoal.concurrent`` recorded; validated again with the other scaling options."""

    max_inputs: int
    target_inputs: int | None


def concurrent(*, max_inputs: int, target_inputs: int | None = None) -> Callable[[F], F]:
    """Let one container run up to ``max_inputs`` inputs of the function at once.

    Sync functions run them on that many threads (the function must be
    thread-safe); async functions run them as tasks on one event loop. The
    autoscaler sizes the pool for ``target_inputs`` per container (default:
    ``max_inputs``) and lets a container burst to ``max_inputs``.

    Raises:
        InvalidError: applied above ``@app.function`` instead of below it.
    """

    def decorate(fn: F) -> F:
        if getattr(fn, "__shoal_raw_function__", None) is not None:
            raise InvalidError("put @shoal.concurrent below @app.function, not above it")
        setattr(fn, CONCURRENT_ATTR, Concurrency(max_inputs, target_inputs))
        return fn

    return decorate


def concurrency_of(fn: Callable[..., Any]) -> Concurrency | None:
    """What ``@shoal.concurrent`` recorded on ``fn``, if it was applied."""
    found = getattr(fn, CONCURRENT_ATTR, None)
    return found if isinstance(found, Concurrency) else None
