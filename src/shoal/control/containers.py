"""The control plane's view of one container: its lifecycle and the inputs it runs.

A container's slots are the dispatcher's unit: ``free`` is ``max_inputs`` minus the
inputs sent to it and not yet answered, the same number the container's own
:class:`shoal.container.slots.Slots` holds.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from shoal.protocol.framing import FramedProtocol
from shoal.protocol.messages import Message

if TYPE_CHECKING:
    from shoal.control.calls import InputRecord


class ContainerState(enum.Enum):
    """Lifecycle of a container; transitions go left to right only."""

    STARTING = "starting"  # process launched, not yet loaded the function
    READY = "ready"  # takes inputs
    DRAINING = "draining"  # takes no more inputs; stops when its inputs finish
    STOPPED = "stopped"  # gone; its unanswered inputs were re-queued or failed


_ALLOWED: dict[ContainerState, frozenset[ContainerState]] = {
    ContainerState.STARTING: frozenset(
        {ContainerState.READY, ContainerState.DRAINING, ContainerState.STOPPED}
    ),
    ContainerState.READY: frozenset({ContainerState.DRAINING, ContainerState.STOPPED}),
    ContainerState.DRAINING: frozenset({ContainerState.STOPPED}),
    ContainerState.STOPPED: frozenset(),
}


class ContainerHandle:
    """One container of a pool, as the control plane tracks it."""

    __slots__ = (
        "conn",
        "container_id",
        "idle_since",
        "index",
        "max_inputs",
        "pid",
        "running",
        "state",
    )

    def __init__(self, container_id: str, index: int, max_inputs: int) -> None:
        self.container_id = container_id
        #: Order of creation within the pool (ties in dispatch go to older containers).
        self.index = index
        self.max_inputs = max_inputs
        self.state = ContainerState.STARTING
        self.conn: FramedProtocol | None = None
        self.pid: int | None = None
        #: Inputs sent to this container and not yet answered, by input id.
        self.running: dict[str, InputRecord] = {}
        #: When the container last had no input; None while it runs some or starts.
        self.idle_since: float | None = None

    @property
    def free(self) -> int:
        """Slots not taken: inputs it can accept right now (0 unless READY)."""
        if self.state is not ContainerState.READY:
            return 0
        return self.max_inputs - len(self.running)

    @property
    def live(self) -> bool:
        """Starting or ready: it counts as capacity for the autoscaler."""
        return self.state in (ContainerState.STARTING, ContainerState.READY)

    def move_to(self, state: ContainerState) -> None:
        """Change state.

        Raises:
            RuntimeError: the transition is not allowed (a bug in the pool).
        """
        if state not in _ALLOWED[self.state]:
            raise RuntimeError(f"container {self.container_id}: {self.state.name} -> {state.name}")
        self.state = state

    def send(self, message: Message) -> None:
        """Send ``message`` if the container is connected; drop it otherwise."""
        if self.conn is not None:
            self.conn.send(message)

    def __repr__(self) -> str:
        return f"<Container {self.container_id} {self.state.name} running={len(self.running)}>"
