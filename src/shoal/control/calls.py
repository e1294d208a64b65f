"""Inputs in flight: their lifecycle, and what each outcome means for retries.

An :class:`InputRecord` is created when the caller submits an input and lives
until its outcome reaches the caller through ``on_done``. The pool moves it
through :class:`CallState`; :func:`after_failure` decides whether a failure is
retried and after what delay, counting user errors against ``retries`` and
container deaths against :data:`~shoal.spec.function.INFRA_RETRIES` separately.

Who pays for a container crash. When a container dies running several inputs,
nothing says which one killed it (an ``os._exit`` leaves no trace), and charging
all of them would let one poison input use up its neighbours' retries. So:

- a crash is charged to an input only when that input ran alone on the container;
- an input that was on crashed containers with others :data:`ISOLATE_AFTER` times
  is *isolated*: from then on it runs alone on a container, so its next crash
  is its own.

Innocent neighbours of a poison input therefore lose nothing but time (at most
:data:`ISOLATE_AFTER` runs in its company, then one run alone), and the poison
input fails after :data:`INFRA_RETRIES` crashes of its own. A single crash in
company (a container killed from outside) costs its inputs one re-run and no
isolation, so recovery from random container deaths stays cheap.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from shoal.exception import ExecutionError, FunctionTimeoutError
from shoal.protocol import payload
from shoal.protocol.messages import CallDone, OutputStatus
from shoal.spec.function import INFRA_RETRIES, FunctionSpec

#: Crashes in the company of other inputs after which an input runs alone.
ISOLATE_AFTER: Final = 2
#: Nested inputs remembered per input for its call graph (a map inside a function
#: may start millions; the graph keeps the first ones).
MAX_CHILDREN: Final = 1000


class CallState(enum.Enum):
    """Lifecycle of one input."""

    QUEUED = "queued"  # waiting in the pool's queue (also between retries)
    RUNNING = "running"  # sent to a container, no output yet
    DONE = "done"  # the function returned; ``result`` holds the pickled value
    FAILED = "failed"  # ``error`` holds the exception for the caller
    CANCELLED = "cancelled"  # the caller cancelled it

    # Members are singletons: hash them by identity, in C (Enum's own hash is Python
    # code, and every state change looks states up in sets and dicts).
    __hash__ = object.__hash__


_ALLOWED: dict[CallState, frozenset[CallState]] = {
    CallState.QUEUED: frozenset({CallState.RUNNING, CallState.FAILED, CallState.CANCELLED}),
    CallState.RUNNING: frozenset(
        {CallState.QUEUED, CallState.DONE, CallState.FAILED, CallState.CANCELLED}
    ),
    CallState.DONE: frozenset(),
    CallState.FAILED: frozenset(),
    CallState.CANCELLED: frozenset(),
}

#: Final states: the caller has its outcome.
FINAL = frozenset({CallState.DONE, CallState.FAILED, CallState.CANCELLED})


class InputRecord:
    """One input of one call, from submission to outcome.

    ``on_done`` is called exactly once, on the control plane's loop, when the
    record reaches a final state. ``result`` is the pickled return value (the
    caller unpickles it, off the control plane's hot path); ``error`` is the
    exception to raise at the caller.
    """

    __slots__ = (
        "args",
        "call_id",
        "children",
        "container_id",
        "crashes",
        "crowd_crashes",
        "dispatched_at",
        "error",
        "error_data",
        "failures",
        "fed",
        "function",
        "input_id",
        "isolated",
        "items",
        "method",
        "on_credit",
        "on_done",
        "on_item",
        "parent",
        "queued_at",
        "result",
        "state",
    )

    def __init__(
        self,
        input_id: str,
        args: bytes,
        on_done: Callable[[InputRecord], None],
        method: str = "",
        on_item: Callable[[bytes], None] | None = None,
        function: str = "",
    ) -> None:
        self.input_id = input_id
        #: The function call it belongs to, when that is not the input itself (a durable
        #: spawn's id), for ``shoal.current_function_call_id()``.
        self.call_id = ""
        #: The pool (function, or class with its parameters) the input belongs to.
        self.function = function
        #: Inputs that code running this one started (at most MAX_CHILDREN of them).
        self.children: list[InputRecord] | None = None
        #: The input whose code started this one, if any (for the call graph).
        self.parent: InputRecord | None = None
        self.args = args
        self.on_done = on_done
        self.method = method
        #: Called with each pickled value a generator yields, in order.
        self.on_item = on_item
        #: Called with each grant of flow-control credit from the container (an HTTP
        #: input: the app took that many bytes of the request's body or messages).
        self.on_credit: Callable[[int], None] | None = None
        self.items = 0  # values yielded so far
        self.fed = False  # request data was fed to its container (it cannot be sent again)
        self.state = CallState.QUEUED
        self.container_id: str | None = None
        self.failures = 0  # user exceptions and timeouts so far
        self.crashes = 0  # containers that died with only this input on them
        self.crowd_crashes = 0  # containers that died with this input among others
        #: Runs alone on a container from now on (see the module docstring).
        self.isolated = False
        #: When it last entered the queue and was last dispatched, on its pool's clock.
        self.queued_at = 0.0
        self.dispatched_at = 0.0
        self.result: bytes | None = None
        self.error: BaseException | None = None
        #: The container's own pickle of the function's exception (the pickle inside a
        #: ``dump_failure``), for a caller in another process that can rebuild the
        #: user's classes.
        self.error_data: bytes | None = None

    def move_to(self, state: CallState) -> None:
        """Change state; on a final state, tell the caller.

        Raises:
            RuntimeError: the transition is not allowed (a bug in the pool).
        """
        if state not in _ALLOWED[self.state]:
            raise RuntimeError(f"input {self.input_id}: {self.state.name} -> {state.name}")
        self.state = state
        if state in FINAL:
            self.args = b""
            self.on_done(self)

    def succeed(self, result: bytes) -> None:
        """Finish with a pickled return value."""
        self.result = result
        self.move_to(CallState.DONE)

    def fail(self, error: BaseException) -> None:
        """Finish with ``error`` for the caller."""
        self.error = error
        self.move_to(CallState.FAILED)

    @property
    def done(self) -> bool:
        """The caller has (or is being given) its outcome."""
        return self.state in FINAL

    def adopt(self, child: InputRecord) -> None:
        """Record that code running this input started ``child`` (for the call graph)."""
        child.parent = self
        if self.children is None:
            self.children = []
        if len(self.children) < MAX_CHILDREN:
            self.children.append(child)


@dataclass(frozen=True, slots=True)
class Retry:
    """Run the input again after ``delay`` seconds."""

    delay: float


def after_failure(
    record: InputRecord, spec: FunctionSpec, *, crash: bool, alone: bool = True
) -> Retry | None:
    """Count one failure of ``record`` and say whether to run it again.

    Args:
        record: the input that failed.
        spec: its function's options (``retries``).
        crash: the container died under the input (an infrastructure failure)
            rather than the function raising or timing out.
        alone: for a crash, whether the input was the only one on the container;
            only then is the crash charged to it (see the module docstring).

    Returns:
        A :class:`Retry`, or ``None`` when the retries of that kind are spent.
    """
    if record.items or record.fed:
        return None  # values went out, or request data came in: a re-run would repeat or lose it
    if crash and not alone:
        record.crowd_crashes += 1
        if record.crowd_crashes >= ISOLATE_AFTER:
            record.isolated = True
        return Retry(0.0)
    if crash:
        record.crashes += 1
        return Retry(0.0) if record.crashes <= INFRA_RETRIES else None
    record.failures += 1
    if record.failures <= spec.retries.max_retries:
        return Retry(spec.retries.delay(record.failures))
    return None


def outcome_message(call_id: str, record: InputRecord) -> CallDone:
    """How ``record`` ended, for the process that called it (a container's code, or a
    client of a server). A function's own exception goes as the container pickled it,
    so a caller that can import the user's classes rebuilds it as it was."""
    if record.state is CallState.DONE:
        assert record.result is not None
        return CallDone(call_id, OutputStatus.OK, record.result)
    if record.state is CallState.CANCELLED:
        return CallDone(call_id, OutputStatus.CANCELLED, b"")
    if record.error_data is not None:
        return CallDone(call_id, OutputStatus.ERROR, record.error_data)
    assert record.error is not None
    return CallDone(call_id, OutputStatus.ERROR, payload.dump_error(record.error))


def describe(spec: FunctionSpec, record: InputRecord) -> str:
    """Name a function (or method) and input for error messages: ``f (input in-3)``."""
    name = f"{spec.name}.{record.method}" if record.method else spec.name
    return f"{name} (input {record.input_id})"


def output_error(spec: FunctionSpec, record: InputRecord, status: int) -> BaseException:
    """The error a failed output of status TIMEOUT or CANCELLED means for the caller
    (an ERROR's is the container's: see :func:`payload.described_error`)."""
    if status == OutputStatus.TIMEOUT:
        return timeout_error(spec, record)
    # CANCELLED although the caller did not cancel it (the container was stopping).
    return ExecutionError(f"{describe(spec, record)} was cancelled in its container")


def timeout_error(
    spec: FunctionSpec, record: InputRecord, detail: str = ""
) -> FunctionTimeoutError:
    """The caller's error for an input that ran past ``spec.timeout``."""
    return FunctionTimeoutError(
        f"{describe(spec, record)} ran past its timeout of {spec.timeout:g} s{detail}"
    )


def attempt_of(record: InputRecord) -> int:
    """Which run of the input this is: every retry counts a failure or a crash first."""
    return record.failures + record.crashes


def still_running(watched: tuple[InputRecord, int]) -> bool:
    """Whether the input of a ``(record, attempt_of(record))`` taken at dispatch still
    runs that same attempt (what the pool's timeout backstop watches)."""
    record, attempt = watched
    return record.state is CallState.RUNNING and attempt_of(record) == attempt
