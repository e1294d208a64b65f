"""The tree of inputs one call started: ``FunctionCall.get_call_graph()``.

Code running an input may call other functions; each such call is an input of
its own, recorded under the one that started it (through the ``parent`` of the
``Call`` message). The graph is read from the control plane's records at the
moment it is asked for, so a running call shows its children so far.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from shoal.control.calls import CallState, InputRecord
from shoal.exception import ContainerInitError, FunctionTimeoutError


class InputStatus(enum.Enum):
    """Where an input stands (Modal's names)."""

    PENDING = "pending"  # queued or running
    SUCCESS = "success"  # returned
    FAILURE = "failure"  # raised, or its containers died until retries ran out
    INIT_FAILURE = "init_failure"  # its container could not load the code
    TERMINATED = "terminated"  # cancelled
    TIMEOUT = "timeout"  # ran past its timeout


@dataclass(frozen=True)
class InputInfo:
    """One input of a call graph and the inputs it started."""

    input_id: str
    function_name: str
    status: InputStatus
    children: list[InputInfo] = field(default_factory=list)


def graph_of(record: InputRecord) -> InputInfo:
    """``record`` and everything it started, as they stand now (call on the control loop)."""
    return InputInfo(
        input_id=record.input_id,
        function_name=f"{record.function}.{record.method}" if record.method else record.function,
        status=_status(record),
        children=[graph_of(child) for child in record.children or ()],
    )


def _status(record: InputRecord) -> InputStatus:
    if record.state is CallState.DONE:
        return InputStatus.SUCCESS
    if record.state is CallState.CANCELLED:
        return InputStatus.TERMINATED
    if record.state is CallState.FAILED:
        if isinstance(record.error, FunctionTimeoutError):
            return InputStatus.TIMEOUT
        if isinstance(record.error, ContainerInitError):
            return InputStatus.INIT_FAILURE
        return InputStatus.FAILURE
    return InputStatus.PENDING
