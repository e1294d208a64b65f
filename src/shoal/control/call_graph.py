"""The graph of inputs a call is part of: ``FunctionCall.get_call_graph()``.

Code running an input may call or spawn other functions; each such call is an
input of its own, recorded under the one that started it (``InputRecord.adopt``,
through the ``parent`` of the ``Call`` or ``Submit`` message). As Modal's does, a
call's graph starts at the top of its chain: a spawn made by a web request
shows the request as the root and itself among the root's children. The graph
is read from the records at the moment it is asked for, so a running call shows
its children so far.

A server answers for stored calls over the wire (``spec.call_graph.to_wire``).
It keeps the records of its newest finished calls; an older
call, or one from before a restart, is answered with its own node alone, its
status read from the store.
"""

from __future__ import annotations

from shoal.control.calls import CallState, InputRecord
from shoal.exception import ContainerInitError, FunctionTimeoutError
from shoal.protocol.messages import OutputStatus
from shoal.spec.call_graph import InputInfo, InputStatus


def graph_of(record: InputRecord) -> list[InputInfo]:
    """The graph ``record`` is part of, from the top of its chain, as it stands now
    (call on the loop that owns the records)."""
    root = record
    while root.parent is not None:
        root = root.parent
    return [_node(root)]


def _node(record: InputRecord) -> InputInfo:
    return InputInfo(
        input_id=record.input_id,
        function_call_id=record.call_id or record.input_id,
        task_id=record.container_id or "",
        status=_status(record),
        function_name=f"{record.function}.{record.method}" if record.method else record.function,
        children=[_node(child) for child in record.children or ()],
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


def lone_node(object_id: str, function: str, outcome: int | None) -> list[InputInfo]:
    """The graph of a stored call whose records are gone: its own node alone, with the
    status its stored outcome (an ``OutputStatus``, or ``None`` while it runs) tells."""
    statuses: dict[int | None, InputStatus] = {
        None: InputStatus.PENDING,
        OutputStatus.OK: InputStatus.SUCCESS,
        OutputStatus.TIMEOUT: InputStatus.TIMEOUT,
        OutputStatus.CANCELLED: InputStatus.TERMINATED,
    }
    return [
        InputInfo(object_id, object_id, "", statuses.get(outcome, InputStatus.FAILURE), function)
    ]
