"""A handle on one spawned input: wait for it, or cancel it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from shoal import settings
from shoal.bridge import Bridged, bridged, run_async, run_sync
from shoal.client.connection import CallSender, connect, stored_outcome
from shoal.client.record import CallRecord
from shoal.client.remote import ChannelConnection
from shoal.client.server_pool import ServerPool
from shoal.context import channel as call_channel
from shoal.exception import InvalidError
from shoal.protocol.messages import Accepted, CallDone, Wait
from shoal.spec.call_graph import InputInfo, from_wire
from shoal.spec.log_line import LogLine, log_lines

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
        pool: ServerPool,
        record: CallRecord,
        finished: asyncio.Event,
        outcome: Callable[[CallRecord], R],
    ) -> None:
        self._pool = pool
        self._record = record
        self._finished = finished
        self._outcome = outcome

    @staticmethod
    def from_id(object_id: str) -> FunctionCall[Any]:
        """The spawned call ``object_id`` of a deployed function (``call.object_id``), from
        any process: ``get`` waits for its stored outcome, even after the spawning
        process exited or the server restarted. An unknown id raises
        ``NotFoundError`` at ``get``.

        In a container of a server, the container's own connection asks.

        Raises:
            ConnectionError: no server to ask.
        """
        channel = call_channel()
        if channel is not None and settings.stored_spawns():
            return StoredFunctionCall(ChannelConnection(channel), object_id, "")
        connection = run_sync(connect())
        return StoredFunctionCall(connection, object_id, "")

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
        """The graph of inputs this call is part of, from the top of its chain (the
        input whose code started it, if any, and so on up), as it stands now: a list of
        root :class:`~shoal.call_graph.InputInfo` nodes. Up to 1,000 children are kept
        per input."""
        return self._record.graph()

    @bridged
    async def cancel(self) -> None:
        """Stop the input; a later ``get`` raises ``InputCancellation``."""
        self._pool.cancel(self._record)

    @bridged
    async def get_logs(self) -> list[LogLine]:
        """The lines this call's code printed so far (on any thread or task of it),
        oldest first."""
        return await self._pool.fetch_logs(input=self.object_id)

    def __repr__(self) -> str:
        return f"FunctionCall({self._pool.spec.name}, {self.object_id}, {self._record.state.name})"


class StoredFunctionCall(FunctionCall[R]):
    """A durable spawn, stored on a server: waits and cancels go through the connection."""

    def __init__(self, connection: CallSender, object_id: str, name: str) -> None:
        self._connection = connection
        self._object_id = object_id
        self._name = name or "function call"
        self._outcome_message: CallDone | None = None

    @property
    def object_id(self) -> str:
        return self._object_id

    @property
    def get(self) -> _Get[R]:
        return _StoredGet(self)

    async def _wait(self, timeout: float | None) -> None:  # noqa: ASYNC109 - get's argument
        if self._outcome_message is not None:
            return
        connection = self._connection
        call_id = connection.next_id()
        done: asyncio.Future[CallDone | None] = asyncio.get_running_loop().create_future()
        poll = timeout is not None and timeout <= 0  # Modal's get(timeout=0): ask once

        def reply(message: Any) -> None:
            if done.done():
                return
            if isinstance(message, CallDone):
                done.set_result(message)
            elif isinstance(message, Accepted):  # a poll's answer: no outcome yet
                done.set_result(None)

        connection.call(Wait(call_id, self._object_id, poll), reply)
        try:
            outcome = await (done if poll else asyncio.wait_for(done, timeout))
        except TimeoutError:
            connection.drop(call_id)
            outcome = None
        if outcome is None:
            raise TimeoutError(f"{self._name} ({self._object_id}) not done after {timeout} s")
        self._outcome_message = outcome

    def _value(self) -> R:
        assert self._outcome_message is not None
        value: R = stored_outcome(self._outcome_message, f"{self._name} ({self._object_id})")
        return value

    @bridged
    async def get_call_graph(self) -> list[InputInfo]:
        """The graph of inputs this call is part of, as the server keeps it: from the
        input that spawned it (if any) down, while the server holds the records of
        the call (its newest 10,000 finished calls, until it restarts); after that,
        the call's own node with its stored status.

        Raises:
            NotFoundError: no such call.
        """
        answer = await self._connection.request("call_graph", object_id=self._object_id)
        try:
            return from_wire(answer.get("graph") if isinstance(answer, dict) else None)
        except ValueError as exc:
            raise InvalidError(f"a malformed call graph from the server: {exc}") from None

    @bridged
    async def cancel(self) -> None:
        """Stop the stored input; a later ``get`` raises ``InputCancellation``."""
        await self._connection.request("call_cancel", object_id=self._object_id)

    @bridged
    async def get_logs(self) -> list[LogLine]:
        """The lines this call's code printed so far, oldest first (from its app's logs
        on the server, on disk).

        Raises:
            NotFoundError: no such call.
        """
        return log_lines(await self._connection.request("call_logs", object_id=self._object_id))

    def __repr__(self) -> str:
        return f"FunctionCall({self._object_id})"


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


class _StoredGet(_Get[R]):
    """``call.get`` of a stored call: each wait asks the server."""

    __slots__ = ()
    _call: StoredFunctionCall[R]

    def __call__(self, timeout: float | None = None) -> R:
        run_sync(self._call._wait(timeout))
        return self._call._value()

    async def aio(self, timeout: float | None = None) -> R:  # noqa: ASYNC109 - Modal's API
        await run_async(self._call._wait(timeout))
        return self._call._value()
