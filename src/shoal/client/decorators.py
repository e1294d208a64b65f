"""Decorators that annotate user code before ``@app.function`` or ``@app.cls`` takes it.

They only record options on the function (or class, or method) object, using the
attribute names of :mod:`shoal.protocol.markers`; the app and the container read
them. Stack them below ``@app.function``::

    @app.function(max_containers=10)
    @shoal.concurrent(max_inputs=20, target_inputs=16)
    def fetch(url: str) -> int: ...
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from shoal.exception import InvalidError
from shoal.protocol import markers

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


def batched(*, max_batch_size: int, wait_ms: int) -> Callable[[F], F]:
    """Gather concurrent inputs into one call with lists (on a function or method).

    Callers pass one input and get one result; the container calls the function
    with up to ``max_batch_size`` inputs at once, one list per argument, waiting
    at most ``wait_ms`` after a batch's first input. The function returns a list
    with one result per input. Its containers take ``max_batch_size`` inputs at
    once unless ``@shoal.concurrent`` says otherwise.

    Raises:
        InvalidError: ``max_batch_size`` is not in 1..1000 or ``wait_ms`` not in
            0..10000.
    """
    if not (isinstance(max_batch_size, int) and 1 <= max_batch_size <= 1000):
        raise InvalidError(f"max_batch_size={max_batch_size!r}: must be an int in 1..1000")
    if not (isinstance(wait_ms, int | float) and 0 <= wait_ms <= 10_000):
        raise InvalidError(f"wait_ms={wait_ms!r}: must be 0..10000 milliseconds")

    def decorate(fn: F) -> F:
        setattr(fn, markers.BATCHED, (max_batch_size, wait_ms))
        return fn

    return decorate


def batch_size_of(fn: Any) -> int | None:
    """The ``max_batch_size`` of a batched function, or of a class's largest batched method."""
    found = getattr(fn, markers.BATCHED, None)
    if found is not None:
        return int(found[0])
    if isinstance(fn, type):
        sizes = [
            getattr(member, markers.BATCHED)[0]
            for _, member in inspect.getmembers(fn)  # inherited methods too
            if getattr(member, markers.BATCHED, None) is not None
        ]
        return max(sizes, default=None)
    return None


def _role(role: str) -> Callable[[], Callable[[F], F]]:
    def factory() -> Callable[[F], F]:
        def decorate(fn: F) -> F:
            setattr(fn, markers.ROLE, role)
            return fn

        return decorate

    return factory


#: ``@shoal.enter()``: run once per container, before its first input (sync or async).
enter = _role(markers.ENTER)
#: ``@shoal.exit()``: run when the container stops (scale-down or shutdown), within the grace.
exit = _role(markers.EXIT)
#: ``@shoal.method()``: a method callers can run (``Obj().name.remote(...)``).
method = _role(markers.METHOD)


class Parameter:
    """A class attribute declared with ``shoal.parameter()``: set per instance by callers."""

    __shoal_parameter__ = True

    def __init__(self, default: Any) -> None:
        self.default = default

    @property
    def required(self) -> bool:
        return self.default is _NO_DEFAULT


_NO_DEFAULT: Any = object()


def parameter(*, default: Any = _NO_DEFAULT) -> Any:
    """Declare a parameter of an ``@app.cls`` class::

        class Generator:
            model_name: str = shoal.parameter(default="tiny")

    ``Generator(model_name="x")`` then has ``self.model_name == "x"`` in its
    containers; each distinct set of parameters gets a pool of its own.
    """
    return Parameter(default)
