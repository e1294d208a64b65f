"""The graph of inputs a call is part of, as values: what ``FunctionCall.get_call_graph()``
returns (Modal's ``modal.call_graph`` names), and its form on the wire.

The control plane builds graphs from its records (``control/call_graph.py``); a
server sends them with :func:`to_wire` and a caller reads them with
:func:`from_wire`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


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
    """One input of a call graph and the inputs it started (Modal's fields, in order).

    ``function_call_id`` is the call the input belongs to (a spawn's ``fc-...`` id, or
    the input's own id); ``task_id`` is the container that ran it last ("" while
    queued); ``module_name`` is the module the function was defined in, where known.
    """

    input_id: str
    function_call_id: str
    task_id: str
    status: InputStatus
    function_name: str
    module_name: str = ""
    children: list[InputInfo] = field(default_factory=list)


def to_wire(graph: list[InputInfo]) -> list[Any]:
    """``graph`` as msgpack-ready lists."""
    return [
        [
            info.input_id,
            info.function_call_id,
            info.task_id,
            info.status.value,
            info.function_name,
            info.module_name,
            to_wire(info.children),
        ]
        for info in graph
    ]


def from_wire(data: Any) -> list[InputInfo]:
    """The graph :func:`to_wire` wrote.

    Raises:
        ValueError: ``data`` is not a graph.
    """
    try:
        return [
            InputInfo(
                str(input_id),
                str(call_id),
                str(task_id),
                InputStatus(status),
                str(function),
                str(module),
                from_wire(children),
            )
            for input_id, call_id, task_id, status, function, module, children in data
        ]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a call graph: {exc}") from None
