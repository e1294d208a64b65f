"""Spawns made by code in containers of an app run without a server, kept by id in memory.

On a server, a container's ``f.spawn()`` is stored (``server/spawns.py``) and any
process can fetch it with ``FunctionCall.from_id``. An app run by ``shoal run`` or
``app.run()`` with no server has no store, yet the patterns built on call ids
(spawn parts, record their ids, gather them elsewhere; a web endpoint that spawns
and is polled later) run inside one app. :class:`SpawnedCalls` gives those calls
``fc-...`` ids the containers of that app can wait on and cancel, for as long as the
app runs; the newest :data:`KEEP` outcomes are kept after their calls end.
"""

from __future__ import annotations

import collections
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from shoal.control.call_graph import InputInfo, graph_of, lone_node
from shoal.control.calls import InputRecord, outcome_message
from shoal.control.pool import Pool
from shoal.exception import Error, NotFoundError
from shoal.protocol import payload
from shoal.protocol.messages import CallDone, OutputStatus, Submit

#: Finished calls whose outcome is kept for ``from_id`` (the oldest go first).
KEEP: Final = 10_000


@dataclass
class LiveCall:
    """A spawned call: its pool and record (kept after the call ends, for its call
    graph), its outcome once it has one, and who waits for it. Shared by
    :class:`SpawnedCalls` and a server's stored spawns."""

    pool: Pool | None
    record: InputRecord | None = None
    outcome: CallDone | None = None
    waiters: list[Callable[[CallDone], None]] = field(default_factory=list)

    def settle(self, outcome: CallDone) -> bool:
        """Record ``outcome`` and answer every waiter; False if it had one already."""
        if self.outcome is not None:
            return False
        self.outcome = outcome
        for answer in self.waiters:
            answer(outcome)
        self.waiters.clear()
        return True

    def wait(self, answer: Callable[[CallDone], None]) -> Callable[[], None]:
        """Call ``answer`` with the outcome, now or once there is one; return a function
        that drops the wait."""
        if self.outcome is not None:
            answer(self.outcome)
            return nothing
        self.waiters.append(answer)

        def drop() -> None:
            if answer in self.waiters:
                self.waiters.remove(answer)

        return drop

    def cancel(self) -> None:
        """Stop the call if it still runs."""
        if self.pool is not None and self.record is not None and self.outcome is None:
            self.pool.cancel(self.record)

    def start(self, record: InputRecord, parent: InputRecord | None) -> None:
        """The call runs as ``record``, started by code running ``parent`` (if any)."""
        self.record = record
        if parent is not None:
            parent.adopt(record)

    def graph(self, object_id: str) -> list[InputInfo]:
        """The call graph this call is part of (its own node alone when it never had a
        record here: restored, or its app gone)."""
        if self.record is not None:
            return graph_of(self.record)
        return lone_node(object_id, "", None if self.outcome is None else self.outcome.status)


class SpawnedCalls:
    """The control plane's spawned calls by id (a ``DurableSpawns`` kept in memory).

    Args:
        find: the pool of a function or class (and its pickled parameters), if any
            (``ControlPlane.find`` with no namespace).
    """

    def __init__(self, find: Callable[[str, bytes], Pool | None]) -> None:
        self._find = find
        self._calls: dict[str, LiveCall] = {}
        self._ids: dict[InputRecord, str] = {}
        self._finished: collections.deque[str] = collections.deque()

    def submit_many(
        self,
        messages: list[Submit],
        accepted: Callable[[str, str], None],
        refused: Callable[[str, BaseException], None],
        parent: InputRecord | None = None,
    ) -> None:
        """Queue each message's input under a new ``fc-...`` id and accept it at once
        (started by code running ``parent``, if given)."""
        for message in messages:
            try:
                pool = self._find(message.function, message.parameters)
            except Error as exc:
                refused(message.call_id, exc)
                continue
            if pool is None:
                refused(message.call_id, NotFoundError(f"no function {message.function!r}"))
                continue
            object_id = "fc-" + secrets.token_hex(12)
            call = self._calls[object_id] = LiveCall(pool)
            [record] = pool.submit_many(
                [message.args], self._done, message.method, call_ids=[object_id]
            )
            call.start(record, parent)
            self._ids[record] = object_id
            accepted(message.call_id, object_id)
            if record.done:  # refused at once by the pool
                self._done(record)

    def _done(self, record: InputRecord) -> None:
        object_id = self._ids.pop(record, None)
        call = self._calls.get(object_id or "")
        if object_id is None or call is None or not call.settle(outcome_message(object_id, record)):
            return
        record.result = None  # the outcome holds it; the record stays for the graph
        self._finished.append(object_id)
        while len(self._finished) > KEEP:
            self._calls.pop(self._finished.popleft(), None)

    def wait(self, object_id: str, answer: Callable[[CallDone], None]) -> Callable[[], None]:
        """Call ``answer`` with the outcome of ``object_id`` once it has one; return a
        function that drops the wait."""
        call = self._calls.get(object_id)
        if call is None:
            error = NotFoundError(
                f"no function call {object_id!r} in this run (spawned calls are kept by id "
                "for the app's life; a shoal server keeps them for good)"
            )
            answer(CallDone(object_id, OutputStatus.ERROR, payload.dump_error(error)))
            return nothing
        return call.wait(answer)

    def cancel(self, object_id: str) -> bool:
        """Cancel ``object_id`` if it still runs; return whether it is known."""
        call = self._calls.get(object_id)
        if call is None:
            return False
        call.cancel()
        return True

    def graph(self, object_id: str) -> list[InputInfo]:
        """The call graph ``object_id`` is part of.

        Raises:
            NotFoundError: no such call in this run.
        """
        call = self._calls.get(object_id)
        if call is None:
            raise NotFoundError(f"no function call {object_id!r} in this run")
        return call.graph(object_id)


def nothing() -> None:
    """A wait that needs no dropping (what ``wait`` returns when it answered at once)."""
    return None
