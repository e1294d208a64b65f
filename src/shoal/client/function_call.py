"""A handle on one spawned input: wait for it, or cancel it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from shoal.client.bridge import Bridged, bridged, run_async, run_sync
from shoal.client.call_graph import InputInfo, graph_of
from shoal.client.remote import AnyPool
from shoal.control.calls import InputRecord

R = TypeVar("R")


class FunctionCall(Generic[R]):
    """The result of ``f.spawn(...)``: an input running in the background.

    ``get(timeout=None)`` waits for the result (raising the function's own
    exception, or ``TimeoutError`` if ``timeout`` seconds pass first, leaving the
    input running); ``cancel()`` stops it, after which ``get`` raises
    ``shoal.exception.InputCancellation``.
    """

    def __init__(
        self,
        pool: AnyPool,
        record: InputRecord,
        finished: asyncio.Event,
        outcome: Callable[[InputRecord], R],
    ) -> None:
        self._pool = pool
        self._record = record
        self._finished = finished
        self._outcome = outcome

    @property
    def object_id(self) -> str:
        """The input's id, as ``shoal.current_input_id()`` reports it in the container."""
        return self._record.input_id

    @property
    def get(self) -> _Get[R]:
        """Wait for the result; ``TimeoutError`` after ``timeout`` seconds (the input goes on).

        ``call.get(timeout=None)`` or ``await call.get.aio(timeout=None)``. The result is
        unpickled on the calling thread; an input already finished costs no trip
        through the control plane's loop.
        """
        return _Get(self)

    async def _wait(self, timeout: float | None) -> None:  # noqa: ASYNC109 - get's argument
        try:
            await asyncio.wait_for(self._finished.wait(), timeout)
        except TimeoutError:
            raise TimeoutError(
                f"{self._pool.spec.name} (input {self.object_id}) not done after {timeout} s"
            ) from None

    #: Wait for every call and return their results in order; once all have finished,
    #: raise the first error (in call order) if any failed. Also
    #: ``await FunctionCall.gather.aio(*calls)``.
    gather: Bridged[..., list[Any]]

    @bridged
    async def get_call_graph(self) -> list[InputInfo]:
        """This input and the inputs its code started, as a tree (``[root]``), as they
        stand now. Up to 1,000 children are kept per input."""
        return [graph_of(self._record)]

    @bridged
    async def cancel(self) -> None:
        """Stop the input; a later ``get`` raises ``InputCancellation``."""
        self._pool.cancel(self._record)

    def __repr__(self) -> str:
        return f"FunctionCall({self._pool.spec.name}, {self.object_id}, {self._record.state.name})"


async def _gather(*calls: FunctionCall[Any]) -> list[Any]:
    outcomes = await asyncio.gather(*(call.get.aio() for call in calls), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return list(outcomes)


FunctionCall.gather = Bridged(_gather)


class _Get(Generic[R]):
    """``call.get``: both faces over one wait and one outcome."""

    __slots__ = ("_call",)

    def __init__(self, call: FunctionCall[R]) -> None:
        self._call = call

    def __call__(self, timeout: float | None = None) -> R:
        call = self._call
        if not call._finished.is_set():  # set on the loop only after the outcome is final
            run_sync(call._wait(timeout))
        return call._outcome(call._record)

    async def aio(self, timeout: float | None = None) -> R:  # noqa: ASYNC109 - Modal's API
        """The same wait, from any event loop."""
        call = self._call
        if not call._finished.is_set():
            await run_async(call._wait(timeout))
        return call._outcome(call._record)
