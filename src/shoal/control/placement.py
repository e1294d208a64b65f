"""Where each container goes: a ledger of the nodes' room, and the choice of a node.

One machine is one node (the local backend: its id is ``""``); a cluster backend
reports several, and reports again when nodes join or leave. Each node is a
:class:`~shoal.spec.resources.Room`; :meth:`Ledger.take` places one container on the
first node in order where it fits (packing: a cluster's autoscaler can then retire
the nodes left empty) and hands back a :class:`~shoal.spec.resources.Grant` that
names the node. Placement is pure bookkeeping, milliseconds at most: nothing here
waits for a cluster to schedule anything.

A function that could never fit on any node is refused when its pool is added,
unless the backend is *elastic* (a cluster whose autoscaler may add a node that
fits): then its containers wait, and :meth:`Ledger.why_not` says why.
"""

from __future__ import annotations

from collections.abc import Mapping

from shoal.exception import InvalidError
from shoal.spec.resources import Grant, Machine, Resources, Room


class Ledger:
    """The room of every node containers may run on.

    Args:
        machines: each node's cores, memory, GPUs and custom resources, by node id.
        elastic: nodes may join later (a function that fits none now may wait).
    """

    def __init__(self, machines: Mapping[str, Machine], elastic: bool = False) -> None:
        self.elastic = elastic
        self.rooms: dict[str, Room] = {}
        self.set_nodes(machines)

    def set_nodes(self, machines: Mapping[str, Machine]) -> bool:
        """The nodes are now ``machines``: a new node starts empty, a known one keeps
        what its containers hold, a gone one is forgotten (its containers are lost with
        it). Returns whether a node joined (room may have appeared)."""
        joined = False
        rooms: dict[str, Room] = {}
        for node, machine in machines.items():
            room = self.rooms.get(node)
            if room is None:
                room = Room.of(machine)
                joined = True
            rooms[node] = room
        self.rooms = rooms
        return joined

    def check(self, need: Resources, name: str) -> None:
        """Refuse a function no container of which could ever fit on a node here.

        Raises:
            InvalidError: it asks for more than any node has (never on an elastic
                backend, where a fitting node may join).
        """
        if self.elastic:
            return
        errors = []
        for room in self.rooms.values():
            try:
                room.check(need, name)
                return
            except InvalidError as exc:
                errors.append(str(exc))
        raise InvalidError(errors[0] if errors else f"{name}: there is no node to run it on")

    def take(self, need: Resources) -> Grant | None:
        """Place one container needing ``need``: its grant, naming the node, or None
        while no node has the room free."""
        for node, room in self.rooms.items():
            grant = room.take(need, node)
            if grant is not None:
                return grant
        return None

    def give_back(self, grant: Grant) -> None:
        """A container that held ``grant`` is gone (a no-op for a node that left)."""
        room = self.rooms.get(grant.node)
        if room is not None:
            room.give_back(grant)

    def why_not(self, need: Resources) -> str:
        """Why a container needing ``need`` does not fit now: for users' eyes."""
        if not self.rooms:
            return "there is no node yet"
        if not any(room.could_hold(need) for room in self.rooms.values()):
            return f"no node can hold {need.describe()} (a node that can must join)"
        return f"every node that can hold {need.describe()} is full"
