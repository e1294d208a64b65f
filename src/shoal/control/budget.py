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

Each container also reserves its function's ``cpu``/``memory``/``gpu`` (and custom)
requests on a node of the :class:`~shoal.control.placement.Ledger` (the one machine,
or a cluster's nodes); a container that fits on no node waits the same way, the
budget says why (:meth:`ContainerBudget.why`), and what the cluster must hold is told
to the backend (``want``): one shape per container held, and per container waiting
for room, so a cluster's autoscaler adds a node for what waits and retires none that
a held container needs (a node that just joined holds nothing in Ray's eyes until
its container has started).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from shoal.control.placement import Ledger
from shoal.spec.resources import Grant, Machine, Resources

#: Told what the cluster must hold: one shape per container held or waiting for room.
Want = Callable[[list[Resources]], None]


class ContainerBudget:
    """Containers one control plane may hold at once.

    Args:
        limit: the most containers at once.
        ledger: the nodes' cores, memory, GPUs and custom resources.
        want: told, whenever it changes, what the containers held and waiting for room
            need (None: no one).
    """

    def __init__(self, limit: int, ledger: Ledger, want: Want | None = None) -> None:
        self.limit = limit
        self.ledger = ledger
        self._want = want
        #: What each pool refused for room waits for: (one container's needs, how many).
        self._short: dict[int, tuple[Resources, int]] = {}
        #: What each container held needs, by its grant's id (only when someone wants it).
        self._held: dict[int, Resources] = {}
        self.used = 0
        #: Called (once each) when a container exits, for pools refused earlier.
        #: How to wake each pool that waits for room, by its key's id (read, not
        #: changed, outside: an empty one means no pool waits).
        self.waiting: dict[int, Callable[[], None]] = {}
        #: Asked to give back one idle container when some pool is refused.
        self._reclaimers: dict[int, Callable[[], bool]] = {}

    def take(
        self, key: object, wake: Callable[[], None], need: Resources, wanted: int = 1
    ) -> Grant | None:
        """Take room for one container needing ``need`` (of the ``wanted`` that ``key``'s
        pool would start now); when there is none, call ``wake`` (once, under ``key``)
        after some frees up, and ask another pool to retire an idle container."""
        if self.used < self.limit:
            grant = self.ledger.take(need)
            if grant is not None:
                self.used += 1
                if self._want is not None:
                    self._held[id(grant)] = need
                    self._short.pop(id(key), None)
                    self._tell_want()
                return grant
            if self._want is not None and self._short.get(id(key)) != (need, wanted):
                self._short[id(key)] = (need, wanted)
                self._tell_want()
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
        self.ledger.give_back(grant)
        if self._held.pop(id(grant), None) is not None:
            self._tell_want()
        self._wake_all()

    def _wake_all(self) -> None:
        waiting, self.waiting = self.waiting, {}
        for wake in waiting.values():
            wake()

    def set_nodes(self, machines: Mapping[str, Machine]) -> None:
        """The nodes changed (a cluster's): when one joined, wake the pools that wait."""
        if self.ledger.set_nodes(machines):
            self._wake_all()

    def why(self, key: object, need: Resources) -> str:
        """Why ``key``'s pool waits for room now, for users' eyes ("" when it does not)."""
        if id(key) not in self.waiting:
            return ""
        if self.used >= self.limit:
            return (
                f"this control plane holds its most containers ({self.limit}, SHOAL_MAX_CONTAINERS)"
            )
        return self.ledger.why_not(need)

    def forget(self, key: object) -> None:
        """``key``'s pool stopped: it waits for nothing."""
        self.waiting.pop(id(key), None)
        if self._short.pop(id(key), None) is not None:
            self._tell_want()

    def _tell_want(self) -> None:
        if self._want is not None:
            short = [need for need, count in self._short.values() for _ in range(count)]
            self._want([*self._held.values(), *short])

    def add_reclaimer(self, key: object, reclaim: Callable[[], bool]) -> None:
        """``reclaim()`` retires one idle container of a pool, returning whether it did."""
        self._reclaimers[id(key)] = reclaim

    def remove_reclaimer(self, key: object) -> None:
        """Forget the reclaimer of a pool that stopped."""
        self._reclaimers.pop(id(key), None)
        self.forget(key)
