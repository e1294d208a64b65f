"""A spawned call as its keeper holds it: its pool and record, its outcome, who waits.

A server's durable spawns (``server/spawns.py``) keep one :class:`LiveCall` per call
they run, so ``FunctionCall.from_id`` can wait on it, cancel it and read its call
graph; the newest :data:`KEEP` outcomes stay in memory after their calls end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from shoal.control.call_graph import graph_of, lone_node
from shoal.control.calls import InputRecord
from shoal.control.pool import Pool
from shoal.protocol.messages import CallDone
from shoal.spec.call_graph import InputInfo

#: Finished calls whose outcome is kept for ``from_id`` (the oldest go first).
KEEP: Final = 10_000


@dataclass
class LiveCall:
    """A spawned call: its pool and record (kept after the call ends, for its call
    graph), its outcome once it has one, and who waits for it."""

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

    def start(self, record: InputRecord) -> None:
        """The call runs as ``record`` (its pool adopted it into its parent's graph)."""
        self.record = record

    def graph(self, object_id: str) -> list[InputInfo]:
        """The call graph this call is part of (its own node alone when it never had a
        record here: restored, or its app gone)."""
        if self.record is not None:
            return graph_of(self.record)
        return lone_node(object_id, "", None if self.outcome is None else self.outcome.status)


def nothing() -> None:
    """A wait that needs no dropping (what ``wait`` returns when it answered at once)."""
    return None
