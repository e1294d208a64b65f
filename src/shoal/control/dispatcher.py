"""Chooses the container that takes the next input, in constant time.

Rule (DESIGN section 1): fill containers up to ``target_inputs``, preferring the
busiest one below target so that spare containers go idle and can scale down;
only when every ready container is at target, burst the least busy one up to
``max_inputs``. Among equals, the one that has been at that load longest wins.

Ready containers sit in buckets by their number of running inputs, and a bit
mask says which buckets are non-empty, so :meth:`Dispatcher.pick` is a couple of
integer operations however many containers the pool has.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shoal.control.containers import ContainerHandle


class Dispatcher:
    """The ready containers of one pool, by load.

    The pool reports every change: :meth:`add` when a container becomes ready,
    :meth:`remove` when it stops taking inputs, :meth:`moved` when its number of
    running inputs changes.
    """

    def __init__(self, target: int, max_inputs: int) -> None:
        # OrderedDicts: their first entry is O(1) to reach however many were removed
        # before it (a plain dict walks over the holes its deletions left).
        self._buckets: list[OrderedDict[str, ContainerHandle]] = [
            OrderedDict() for _ in range(max_inputs + 1)
        ]
        self.target = target
        self._mask = 0  # bit n: some ready container runs exactly n inputs
        self._below_target = (1 << target) - 1
        self._bursting = ((1 << max_inputs) - 1) & ~self._below_target

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets)

    def add(self, container: ContainerHandle) -> None:
        """Start offering ``container`` (READY) to inputs."""
        self._put(container, len(container.running))

    def remove(self, container: ContainerHandle) -> None:
        """Stop offering ``container``; a no-op if it was not offered."""
        self._take(container, len(container.running))

    def moved(self, container: ContainerHandle, before: int) -> None:
        """``container`` went from ``before`` running inputs to its current number."""
        if self._take(container, before):
            self._put(container, len(container.running))

    def pick(self) -> ContainerHandle | None:
        """The container for the next input, or ``None`` when all are full."""
        below = self._mask & self._below_target
        if below:
            load = below.bit_length() - 1  # the busiest below target
        else:
            burst = self._mask & self._bursting
            if not burst:
                return None
            load = (burst & -burst).bit_length() - 1  # the least busy above it
        return next(iter(self._buckets[load].values()))

    def pick_empty(self) -> ContainerHandle | None:
        """A ready container running nothing (for an input that must run alone), or ``None``."""
        bucket = self._buckets[0]
        return next(iter(bucket.values())) if bucket else None

    def least_busy(self) -> ContainerHandle | None:
        """The ready container running the fewest inputs, or ``None`` when there is none."""
        if not self._mask:
            return None
        load = (self._mask & -self._mask).bit_length() - 1
        return next(iter(self._buckets[load].values()))

    def _put(self, container: ContainerHandle, load: int) -> None:
        self._buckets[load][container.container_id] = container
        self._mask |= 1 << load

    def _take(self, container: ContainerHandle, load: int) -> bool:
        bucket = self._buckets[load]
        if bucket.pop(container.container_id, None) is None:
            return False
        if not bucket:
            self._mask &= ~(1 << load)
        return True
