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

The cost of a decision does not grow with the pool: the snapshot carries counts,
and of the idle containers only the longest-idle ones the policy may stop.
"""

from __future__ import annotations

from dataclasses import dataclass

from shoal.spec.function import Scaling


@dataclass(frozen=True, slots=True)
class IdleContainer:
    """A ready container with no input since ``idle_since``."""

    container_id: str
    idle_since: float


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    """What the policy decides on: counts, the clock, the parameters.

    ``live`` counts containers starting or ready (draining ones no longer count),
    ``running`` the inputs on them. ``idle`` lists idle ready containers, longest
    idle first. A pool may pass only a prefix: the first :func:`surplus` of them,
    cut after the first one still inside its ``scaledown_window`` (the ones after
    it are younger still), which is all :func:`decide` reads.
    """

    now: float
    queued: int
    running: int
    live: int
    idle: tuple[IdleContainer, ...]
    scaling: Scaling


@dataclass(frozen=True, slots=True)
class Decision:
    """What the pool should do now, and when to ask again.

    ``recheck_at`` is the earliest time a surplus idle container will have idled
    out, or ``None`` when nothing will change without an event.
    """

    start: int
    stop: tuple[str, ...]
    recheck_at: float | None


def desired_containers(queued: int, running: int, scaling: Scaling) -> int:
    """The number of containers DESIGN's formula asks for."""
    load = queued + running
    wanted = -(-load // scaling.target)  # ceil, in integers
    if load > 0:
        wanted += scaling.buffer_containers
    wanted = max(wanted, scaling.min_containers)
    if scaling.max_containers is not None:
        wanted = min(wanted, scaling.max_containers)
    return wanted


def surplus(queued: int, running: int, live: int, scaling: Scaling) -> int:
    """How many containers the pool has above what it needs (candidates to stop)."""
    return max(0, live - desired_containers(queued, running, scaling))


def decide(snapshot: PoolSnapshot) -> Decision:
    """Return the containers to start and stop for ``snapshot``."""
    scaling = snapshot.scaling
    desired = desired_containers(snapshot.queued, snapshot.running, scaling)
    if desired >= snapshot.live:
        return Decision(start=desired - snapshot.live, stop=(), recheck_at=None)
    candidates = snapshot.idle[: snapshot.live - desired]
    window = scaling.scaledown_window
    deadline = snapshot.now - window
    expired = 0
    while expired < len(candidates) and candidates[expired].idle_since <= deadline:
        expired += 1
    stop = tuple(c.container_id for c in candidates[:expired])
    recheck_at = None
    if expired < len(candidates):
        recheck_at = candidates[expired].idle_since + window
    return Decision(start=0, stop=stop, recheck_at=recheck_at)
