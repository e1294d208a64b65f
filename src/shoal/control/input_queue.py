"""A function's queue of inputs waiting for a free slot.

First in, first out, with retries going back to the front. Cancelling a queued
input is O(1): the record is marked and skipped when it reaches the front, and
``len`` counts only inputs still waiting.
"""

from __future__ import annotations

from collections import deque

from shoal.control.calls import CallState, InputRecord


class InputQueue:
    """FIFO of :class:`InputRecord` in state QUEUED."""

    __slots__ = ("_items", "live")

    def __init__(self) -> None:
        self._items: deque[InputRecord] = deque()
        #: Inputs still waiting (what ``len`` says; read directly on the hot path,
        #: where a ``len()`` is one Python call more per look).
        self.live = 0

    def __len__(self) -> int:
        return self.live

    def push(self, record: InputRecord) -> None:
        """Add ``record`` at the back."""
        self._items.append(record)
        self.live += 1

    def push_front(self, record: InputRecord) -> None:
        """Add ``record`` at the front (a retry goes before newer inputs)."""
        self._items.appendleft(record)
        self.live += 1

    def pop(self) -> InputRecord | None:
        """Remove and return the oldest waiting input, or ``None``."""
        items = self._items
        while items:
            record = items.popleft()
            if record.state is CallState.QUEUED:
                self.live -= 1
                return record
        return None

    def forget(self, record: InputRecord) -> None:
        """Account for ``record`` leaving the queue by another way (cancel, failure).

        The caller has already moved it out of QUEUED; :meth:`pop` will skip it.
        """
        self.live -= 1

    def drain(self) -> list[InputRecord]:
        """Remove and return every waiting input."""
        waiting = [r for r in self._items if r.state is CallState.QUEUED]
        self._items.clear()
        self.live = 0
        return waiting


class Waiting:
    """Every input of a pool that waits: the main queue, the queue of isolated inputs
    (which must run alone on a container, see :mod:`shoal.control.calls`), and
    those waiting out a retry delay. A record goes to the queue its flags name."""

    __slots__ = ("delayed", "isolated", "main")

    def __init__(self) -> None:
        self.main = InputQueue()
        self.isolated = InputQueue()
        self.delayed: set[InputRecord] = set()

    def __len__(self) -> int:
        return self.main.live + self.isolated.live + len(self.delayed)

    def _queue(self, record: InputRecord) -> InputQueue:
        return self.isolated if record.isolated else self.main

    def push(self, record: InputRecord) -> None:
        """Queue a new input at the back."""
        self._queue(record).push(record)

    def push_front(self, record: InputRecord) -> None:
        """Queue a retried input ahead of newer ones."""
        self._queue(record).push_front(record)

    def delay(self, record: InputRecord) -> None:
        """Hold ``record`` out of the queues until :meth:`release`."""
        self.delayed.add(record)

    def release(self, record: InputRecord) -> bool:
        """Put a delayed ``record`` back at the front; ``False`` if it is no longer held."""
        if record not in self.delayed:
            return False
        self.delayed.discard(record)
        self.push_front(record)
        return True

    def forget(self, record: InputRecord) -> None:
        """``record`` left by another way (cancelled while it waited)."""
        if record in self.delayed:
            self.delayed.discard(record)
        else:
            self._queue(record).forget(record)

    def drain(self) -> list[InputRecord]:
        """Remove and return every waiting input."""
        waiting = self.main.drain() + self.isolated.drain() + list(self.delayed)
        self.delayed.clear()
        return waiting
