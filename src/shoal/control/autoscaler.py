"""The autoscaling policy: a pure function from a snapshot of a pool to a decision.

No clock, no I/O, no state: :func:`decide` sees the time as ``snapshot.now`` and
answers with timestamps, so tests and the simulator step time by building
snapshots. The rule (DESIGN section 1)::

    desired = clamp(ceil((queued + running) / target_inputs) + buffer, min, max)

where ``buffer`` counts only while the function is busy. Containers that are
starting count as capacity, so one burst of inputs starts each container once.
Scale-down stops only containers that have been idle for ``scaledown_window``,
longest-idle first, and never more than the pool has above ``desired``.

Example, the one in the docs: max_inputs=20, 100 queued inputs and no containers
give ``start=5``; one more input gives ``start=1`` on top of those five.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shoal.control.spec import Scaling


@dataclass(frozen=True, slots=True)
class ContainerView:
    """One live container as the policy sees it.

    ``idle_since`` is when its last input finished (or when it became ready), or
    ``None`` while it runs inputs or is still starting.
    """

    container_id: str
    idle_since: float | None


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    """What the policy decides on: counts, containers, the clock, the parameters.

    ``containers`` holds the containers that are starting or ready; draining and
    stopped ones no longer count.
    """

    now: float
    queued: int
    running: int
    containers: tuple[ContainerView, ...]
    scaling: Scaling


@dataclass(frozen=True, slots=True)
class Decision:
    """What the pool should do now, and when to ask again.

    ``recheck_at`` is the earliest time an idle container will have idled out,
    or ``None`` when nothing will change without an event.
    """

    start: int
    stop: tuple[str, ...]
    recheck_at: float | None


def desired_containers(queued: int, running: int, scaling: Scaling) -> int:
    """The number of containers DESIGN's formula asks for."""
    load = queued + running
    wanted = math.ceil(load / scaling.target)
    if load > 0:
        wanted += scaling.buffer_containers
    wanted = max(wanted, scaling.min_containers)
    if scaling.max_containers is not None:
        wanted = min(wanted, scaling.max_containers)
    return wanted


def decide(snapshot: PoolSnapshot) -> Decision:
    """Return the containers to start and stop for ``snapshot``."""
    scaling = snapshot.scaling
    desired = desired_containers(snapshot.queued, snapshot.running, scaling)
    live = len(snapshot.containers)
    if desired >= live:
        return Decision(start=desired - live, stop=(), recheck_at=None)
    # (idle_since, id) pairs, longest idle first; the expired ones are a prefix.
    idle = sorted(
        (c.idle_since, c.container_id) for c in snapshot.containers if c.idle_since is not None
    )
    window = scaling.scaledown_window
    expired = [cid for since, cid in idle if snapshot.now - since >= window]
    stop = tuple(expired[: live - desired])
    recheck_at = None
    if len(stop) < live - desired:
        recheck_at = min((since + window for since, _ in idle[len(expired) :]), default=None)
    return Decision(start=0, stop=stop, recheck_at=recheck_at)
