"""The one object that bounds how many inputs a container runs at once.

The control plane's dispatcher sends a container at most ``max_inputs`` inputs;
:class:`Slots` holds the same number on this side, so an input that arrives early
(before the previous output's slot was released here) waits instead of running
over capacity. Worker threads take and release slots too, so the counts are
guarded by a lock; only tasks on the loop ever wait for one.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque


class Slots:
    """A resizable counting semaphore for inputs, on one event loop."""

    def __init__(self, capacity: int, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity={capacity}: must be >= 1")
        #: The loop waiters wait on; a release from another thread wakes them through it.
        self._loop = loop
        self._capacity = capacity
        self._used = 0
        self._lock = threading.Lock()
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def used(self) -> int:
        """Slots taken."""
        return self._used

    @property
    def capacity(self) -> int:
        """Slots in all."""
        return self._capacity

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody waits; return whether it did (any thread)."""
        with self._lock:
            if self._used < self._capacity and not self._waiters:
                self._used += 1
                return True
            return False

    async def acquire(self) -> None:
        """Take a slot, waiting for one in arrival order."""
        if self.try_acquire():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot while being cancelled: give it back
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Return a slot; the longest waiter gets it. Safe from any thread."""
        with self._lock:
            self._used -= 1
            waiting = bool(self._waiters)
        if not waiting:
            return
        if self._loop is not None and _running_loop() is not self._loop:
            self._loop.call_soon_threadsafe(self._wake)
        else:
            self._wake()

    def resize(self, capacity: int) -> None:
        """Change the capacity; inputs already running keep their slots."""
        if capacity < 1:
            raise ValueError(f"capacity={capacity}: must be >= 1")
        self._capacity = capacity
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            with self._lock:
                if self._used >= self._capacity:
                    return
                waiter = self._waiters.popleft()
                if waiter.done():
                    continue
                self._used += 1
            waiter.set_result(None)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
