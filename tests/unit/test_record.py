"""The client's own call record: replies in, outcome out, exactly once."""

from __future__ import annotations

import pytest

from shoal.client.record import CallRecord, CallState
from shoal.exception import FunctionTimeoutError, InputCancellation
from shoal.protocol import payload
from shoal.protocol.messages import CallDone, CallItem, OutputStatus
from shoal.spec.call_graph import InputStatus, from_wire, to_wire


def _record(items: list[bytes] | None = None) -> tuple[CallRecord, list[CallRecord]]:
    ended: list[CallRecord] = []
    on_item = items.append if items is not None else None
    return CallRecord("c-1", ended.append, "", on_item, "f"), ended


def test_items_then_the_outcome_reach_the_caller_once() -> None:
    items: list[bytes] = []
    record, ended = _record(items)
    record.apply(CallItem("c-1", b"a"), "f")
    record.apply(CallDone("c-1", OutputStatus.OK, b"done"), "f")
    record.apply(CallDone("c-1", OutputStatus.OK, b"again"), "f")  # late: ignored
    assert (items, record.items, record.result, ended) == ([b"a"], 1, b"done", [record])
    assert record.graph()[0].status is InputStatus.SUCCESS


def test_an_error_is_rebuilt_at_the_caller_and_a_cancel_after_it_changes_nothing() -> None:
    record, ended = _record()
    raised = payload.dump_error(FunctionTimeoutError("too slow"))
    record.apply(CallDone("c-1", OutputStatus.ERROR, raised), "f (call c-1)")
    record.cancel()
    assert record.state is CallState.FAILED and isinstance(record.error, FunctionTimeoutError)
    assert len(ended) == 1 and record.graph()[0].status is InputStatus.TIMEOUT


def test_a_cancelled_reply_and_a_cancel_both_end_it_as_cancelled() -> None:
    record, _ = _record()
    record.apply(CallDone("c-1", OutputStatus.CANCELLED, b""), "f (call c-1)")
    assert isinstance(record.error, InputCancellation)
    mine, ended = _record()
    mine.cancel()
    assert mine.state is CallState.CANCELLED and ended == [mine]
    with pytest.raises(RuntimeError):
        mine.succeed(b"x")  # a record ends once


def test_a_graph_goes_over_the_wire_and_a_malformed_one_is_refused() -> None:
    record, _ = _record()
    graph = record.graph()
    assert from_wire(to_wire(graph)) == graph
    with pytest.raises(ValueError, match="not a call graph"):
        from_wire([["too", "short"]])
