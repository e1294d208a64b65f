"""``FunctionStats``: what a caller can read of a function's pool at one moment."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class FunctionStats:
    """A snapshot of one function's pool.

    ``containers`` counts containers started and not yet stopped (starting,
    ready or draining); ``containers_started`` counts every container the pool
    ever started. ``awaiting_room`` counts containers the pool wants and cannot
    start now because the machine has no room for them (cores, memory, GPUs, or
    SHOAL_MAX_CONTAINERS): their inputs wait in ``queued``, and ``waiting_for`` says
    why, for people (``"no node can hold 1 cores, 128 MiB, 1 gpu_island (a node that
    can must join)"``). ``containers_stopped``
    counts the containers gone, by why they went (``idle``, ``crash``, ``oom``,
    ``timeout``, ``stop``, ``redeploy``: see :mod:`shoal.spec.events`).
    """

    queued: int
    running: int
    containers: int
    ready: int
    containers_started: int
    awaiting_room: int = 0
    containers_stopped: dict[str, int] = field(default_factory=dict)
    waiting_for: str = ""

    @property
    def backlog(self) -> int:
        """Modal's name for inputs waiting for a container."""
        return self.queued

    @property
    def num_total_runners(self) -> int:
        """Modal's name for the number of containers."""
        return self.containers
