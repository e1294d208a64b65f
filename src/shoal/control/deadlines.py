"""The control plane's backstop for per-input timeouts: one heap and one timer per pool.

A container enforces ``timeout`` itself and reports TIMEOUT. When it does not
(it hangs, or its loop is blocked), the pool must still answer the caller: each
dispatched input is watched until ``timeout + grace`` and reported to the pool if
it is still running that same attempt then. Entries of inputs that finished are
left in the heap and skipped (pruned when they outnumber the live ones), so a
dispatch costs one heap push instead of a timer object per input.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable

from shoal.control.calls import CallState, InputRecord


class Deadlines:
    """Calls ``expired(record)`` for inputs still running their attempt past a deadline."""

    def __init__(self, expired: Callable[[InputRecord], None]) -> None:
        self._expired = expired
        self._heap: list[tuple[float, int, InputRecord, int]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, record: InputRecord, deadline: float, live: int) -> None:
        """Watch ``record``'s current attempt until ``deadline`` (loop time).

        ``live`` is how many inputs are running, to know when stale entries outnumber them.
        """
        entry = (deadline, next(self._order), record, _attempt(record))
        heapq.heappush(self._heap, entry)
        if len(self._heap) > 2 * live + 64:
            self._prune()
        if self._timer is None or deadline < self._timer.when():
            self._schedule(deadline)

    def close(self) -> None:
        """Stop watching (the pool is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._heap.clear()

    def _schedule(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = asyncio.get_running_loop().time()
        while self._heap and self._heap[0][0] <= now:
            _, _, record, attempt = heapq.heappop(self._heap)
            if _current(record, attempt):
                self._expired(record)
        if self._heap:
            self._schedule(self._heap[0][0])

    def _prune(self) -> None:
        self._heap = [entry for entry in self._heap if _current(entry[2], entry[3])]
        heapq.heapify(self._heap)


def _attempt(record: InputRecord) -> int:
    """Which run of the input this is: every retry counts a failure or a crash first."""
    return record.failures + record.crashes


def _current(record: InputRecord, attempt: int) -> bool:
    return record.state is CallState.RUNNING and _attempt(record) == attempt
