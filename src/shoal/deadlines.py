"""One heap of deadlines and one timer, for many watched things: Shoal's per-input timeouts.

The control plane watches each dispatched input until ``timeout + grace`` (its
backstop, when a container does not report a timeout itself), and a container
watches each input it runs on a thread until ``timeout``. Both watch thousands
of inputs at once, nearly all of which finish in time. So a watch is one heap
push, not a timer object: entries of things no longer due (their input ended)
stay in the heap and are skipped when they come up, and are pruned when they
outnumber the live ones, which keeps the heap's size, and each push, amortised
O(1) in the inputs that finished.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")


class DeadlineHeap(Generic[K]):
    """Calls ``expired(key)`` once a watched key's deadline (loop time) passes, if
    ``due(key)`` still holds then.

    Runs on ``loop`` (default: the running loop where it is first used); every method
    is called on that loop.
    """

    def __init__(
        self,
        expired: Callable[[K], None],
        due: Callable[[K], bool],
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._expired = expired
        self._due = due
        self._loop = loop
        self._heap: list[tuple[float, int, K]] = []
        self._order = itertools.count()  # ties never compare keys
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, key: K, deadline: float, live: int) -> None:
        """Watch ``key`` until ``deadline``; ``live`` is how many keys are still due, to
        know when the stale entries outnumber them."""
        heapq.heappush(self._heap, (deadline, next(self._order), key))
        if len(self._heap) > 2 * live + 64:
            self._prune()
        if self._timer is None or deadline < self._timer.when():
            self._schedule(deadline)

    def close(self) -> None:
        """Stop watching everything."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._heap.clear()

    def __len__(self) -> int:
        return len(self._heap)

    def _schedule(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self._timer = self._loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        assert self._loop is not None
        now = self._loop.time()
        while self._heap and self._heap[0][0] <= now:
            key = heapq.heappop(self._heap)[2]
            if self._due(key):
                self._expired(key)
        if self._heap:
            self._schedule(self._heap[0][0])

    def _prune(self) -> None:
        due = self._due
        self._heap = [entry for entry in self._heap if due(entry[2])]
        heapq.heapify(self._heap)
