"""The caller's record of one call it made, kept from the replies the protocol brings.

A handle sends an input (a ``Submit`` to a server, a ``Call`` from inside a
container) and gets back ``CallItem`` messages, one per value a generator yields,
and one ``CallDone`` with the outcome. A :class:`CallRecord` holds what the handle
needs of that: whether the call runs or how it ended, the pickled result, or the
error to raise, rebuilt from what the server passed on (the container's pickle of
the function's exception; the server never unpickles it). It is the client's own:
the control plane's ``InputRecord`` (queues, retries, containers) stays in
``control/``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from shoal.exception import ContainerInitError, FunctionTimeoutError, InputCancellation
from shoal.protocol import payload
from shoal.protocol.messages import CallDone, CallItem, OutputStatus
from shoal.spec.call_graph import InputInfo, InputStatus


class CallState(enum.Enum):
    """Where a call stands, as its caller sees it."""

    RUNNING = "running"  # sent; no outcome yet (queued or running, the caller cannot tell)
    DONE = "done"  # the function returned; ``result`` holds the pickled value
    FAILED = "failed"  # ``error`` holds the exception to raise
    CANCELLED = "cancelled"  # the caller cancelled it

    __hash__ = object.__hash__  # by identity, in C (see control.calls.CallState)


class CallRecord:
    """One call a handle made, from sending it to its outcome.

    ``on_done`` is called exactly once, on the loop that applies the replies, when
    the record reaches a final state; ``on_item`` with each pickled value a generator
    yields before that; ``on_credit`` (a web request) with each grant of flow-control
    credit.
    """

    __slots__ = (
        "error",
        "function",
        "input_id",
        "items",
        "method",
        "on_credit",
        "on_done",
        "on_item",
        "result",
        "state",
    )

    def __init__(
        self,
        input_id: str,
        on_done: Callable[[CallRecord], None],
        method: str = "",
        on_item: Callable[[bytes], None] | None = None,
        function: str = "",
    ) -> None:
        self.input_id = input_id
        self.function = function
        self.method = method
        self.on_done = on_done
        self.on_item = on_item
        self.on_credit: Callable[[int], None] | None = None
        self.items = 0
        self.state = CallState.RUNNING
        self.result: bytes | None = None
        self.error: BaseException | None = None

    @property
    def done(self) -> bool:
        """The caller has (or is being given) its outcome."""
        return self.state is not CallState.RUNNING

    def succeed(self, result: bytes) -> None:
        """Finish with a pickled return value."""
        self.result = result
        self._finish(CallState.DONE)

    def fail(self, error: BaseException) -> None:
        """Finish with ``error`` for the caller."""
        self.error = error
        self._finish(CallState.FAILED)

    def cancel(self) -> None:
        """Finish as cancelled by the caller (nothing if it already ended)."""
        if not self.done:
            self._finish(CallState.CANCELLED)

    def _finish(self, state: CallState) -> None:
        if self.done:
            raise RuntimeError(f"call {self.input_id}: {self.state.name} -> {state.name}")
        self.state = state
        self.on_done(self)

    def apply(self, message: CallItem | CallDone, context: str) -> None:
        """Apply one reply (``context`` names the call in an error); a reply that comes
        after the outcome (a cancelled call's late answer) is ignored."""
        if self.done:
            return
        if isinstance(message, CallItem):
            if self.on_item is not None:
                self.items += 1
                self.on_item(message.data)
            return
        error = reply_error(message, context)
        if error is None:
            self.succeed(message.data)
        else:
            self.fail(error)

    def describe(self, name: str) -> str:
        """Name the function (or method) and the call for errors: ``f (input in-3)``."""
        full = f"{name}.{self.method}" if self.method else name
        return f"{full} (input {self.input_id})"

    def graph(self) -> list[InputInfo]:
        """Its call graph as the caller alone can tell it: its own node (the inputs it
        started are known where they ran: a stored call asks its server)."""
        return [
            InputInfo(
                input_id=self.input_id,
                function_call_id=self.input_id,
                task_id="",
                status=self._status(),
                function_name=f"{self.function}.{self.method}" if self.method else self.function,
            )
        ]

    def _status(self) -> InputStatus:
        if self.state is CallState.DONE:
            return InputStatus.SUCCESS
        if self.state is CallState.CANCELLED:
            return InputStatus.TERMINATED
        if self.state is CallState.FAILED:
            if isinstance(self.error, FunctionTimeoutError):
                return InputStatus.TIMEOUT
            if isinstance(self.error, ContainerInitError):
                return InputStatus.INIT_FAILURE
            return InputStatus.FAILURE
        return InputStatus.PENDING


def reply_error(message: CallDone, context: str) -> BaseException | None:
    """The error a ``CallDone`` means at the caller (``None`` for OK); ``context`` names
    the call in it. Only here, at the caller, is a function's exception unpickled."""
    if message.status == OutputStatus.OK:
        return None
    if message.status == OutputStatus.CANCELLED:
        return InputCancellation(f"{context} was cancelled")
    return payload.load_exception(message.data, context)
