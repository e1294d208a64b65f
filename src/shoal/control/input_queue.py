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

    __slots__ = ("_items", "_live")

    def __init__(self) -> None:
        self._items: deque[InputRecord] = deque()
        self._live = 0

    def __len__(self) -> int:
        return self._live

    def push(self, record: InputRecord) -> None:
        """Add ``record`` at the back."""
        self._items.append(record)
        self._live += 1

    def push_front(self, record: InputRecord) -> None:
        """Add ``record`` at the front (a retry goes before newer inputs)."""
        self._items.appendleft(record)
        self._live += 1

    def pop(self) -> InputRecord | None:
        """Remove and return the oldest waiting input, or ``None``."""
        items = self._items
        while items:
            record = items.popleft()
            if record.state is CallState.QUEUED:
                self._live -= 1
                return record
        return None

    def forget(self, record: InputRecord) -> None:
        """Account for ``record`` leaving the queue by another way (cancel, failure).

        The caller has already moved it out of QUEUED; :meth:`pop` will skip it.
        """
        self._live -= 1

    def drain(self) -> list[InputRecord]:
        """Remove and return every waiting input."""
        waiting = [r for r in self._items if r.state is CallState.QUEUED]
        self._items.clear()
        self._live = 0
        return waiting
