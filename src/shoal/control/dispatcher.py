"""Chooses the container that takes the next input.

Rule (DESIGN section 1): fill containers up to ``target_inputs``, preferring the
busiest one below target so that spare containers go idle and can scale down;
only when every ready container is at target, burst the least busy one up to
``max_inputs``. Ties go to the oldest container.
"""

from __future__ import annotations

from collections.abc import Iterable

from shoal.control.containers import ContainerHandle, ContainerState


def pick(containers: Iterable[ContainerHandle], target: int) -> ContainerHandle | None:
    """Return the container for the next input, or ``None`` when all are full.

    Args:
        containers: the pool's containers (any state; only READY ones qualify).
        target: the pool's ``target_inputs``.
    """
    below_target: ContainerHandle | None = None
    burst: ContainerHandle | None = None
    for c in containers:
        if c.state is not ContainerState.READY:
            continue
        n = len(c.running)
        if n < target:
            if below_target is None or n > len(below_target.running):
                below_target = c
        elif n < c.max_inputs and (burst is None or n < len(burst.running)):
            burst = c
    return below_target if below_target is not None else burst
