"""How many containers one control plane may have at once, across all its pools, and
the machine's room (cores, memory, GPUs) they reserve.

The autoscaling policy sizes each pool on its own, and with the default
``max_containers=None`` a burst of 5,000 one-at-a-time inputs asks for 5,000
containers. On one machine that is a fork bomb, not a pool. The budget caps the
containers a control plane keeps (starting, ready or draining, until they have
exited) at SHOAL_MAX_CONTAINERS, by default a few per CPU. A pool that wants more
than the budget allows starts what it may; its other inputs wait in its queue,
and it is woken to try again when any container of any pool exits. A pool that
is refused also asks the others to give back one idle container (above their
``min_containers``), and while it waits, a pool whose queue is empty retires each
container of its own that goes idle, so a busy function is not starved by idle
ones for a whole ``scaledown_window``.

Each container also reserves its function's ``cpu``/``memory``/``gpu`` requests
from the machine's :class:`~shoal.spec.resources.Room`; a container that does
not fit waits the same way.
"""

from __future__ import annotations

from collections.abc import Callable

from shoal.spec.resources import Grant, Resources, Room


class ContainerBudget:
    """Containers one control plane may hold at once.

    Args:
        limit: the most containers at once.
        room: the machine's cores, memory and GPUs.
    """

    def __init__(self, limit: int, room: Room) -> None:
        self.limit = limit
        self.room = room
        self.used = 0
        #: Called (once each) when a container exits, for pools refused earlier.
        #: How to wake each pool that waits for room, by its key's id (read, not
        #: changed, outside: an empty one means no pool waits).
        self.waiting: dict[int, Callable[[], None]] = {}
        #: Asked to give back one idle container when some pool is refused.
        self._reclaimers: dict[int, Callable[[], bool]] = {}

    def take(self, key: object, wake: Callable[[], None], need: Resources) -> Grant | None:
        """Take room for one container needing ``need``; when there is none, call ``wake``
        (once, under ``key``) after some frees up, and ask another pool to retire an idle
        container."""
        if self.used < self.limit:
            grant = self.room.take(need)
            if grant is not None:
                self.used += 1
                return grant
        self.waiting[id(key)] = wake
        for owner, reclaim in list(self._reclaimers.items()):
            if owner != id(key) and reclaim():
                break
        return None

    def wanted_elsewhere(self, key: object) -> bool:
        """Whether a pool other than ``key``'s waits for room (so an idle container of
        ``key``'s is better retired now than at the end of its scale-down window)."""
        return any(owner != id(key) for owner in self.waiting)

    def give_back(self, grant: Grant) -> None:
        """A container exited: its room is free; wake the pools that wait for room."""
        self.used -= 1
        self.room.give_back(grant)
        waiting, self.waiting = self.waiting, {}
        for wake in waiting.values():
            wake()

    def add_reclaimer(self, key: object, reclaim: Callable[[], bool]) -> None:
        """``reclaim()`` retires one idle container of a pool, returning whether it did."""
        self._reclaimers[id(key)] = reclaim

    def remove_reclaimer(self, key: object) -> None:
        """Forget the reclaimer of a pool that stopped."""
        self._reclaimers.pop(id(key), None)
