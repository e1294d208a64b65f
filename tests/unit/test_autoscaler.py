"""The pure autoscaling policy, driven by snapshots with an explicit clock."""

from __future__ import annotations

import dataclasses

import pytest

from shoal.control.autoscaler import ContainerView, PoolSnapshot, decide, desired_containers
from shoal.control.spec import Scaling

BASE = PoolSnapshot(now=100.0, queued=0, running=0, containers=(), scaling=Scaling(max_inputs=20))


def views(*idle_since: float | None) -> tuple[ContainerView, ...]:
    return tuple(ContainerView(f"c{i}", since) for i, since in enumerate(idle_since))


def test_the_documented_example() -> None:
    snap = dataclasses.replace(BASE, queued=100)
    assert decide(snap).start == 5
    snap = dataclasses.replace(BASE, queued=101)
    assert decide(snap).start == 6
    # Five already starting: the 101st input adds exactly one.
    snap = dataclasses.replace(BASE, queued=101, containers=views(*[None] * 5))
    assert decide(snap).start == 1


@pytest.mark.parametrize(
    ("queued", "running", "scaling", "expected"),
    [
        (0, 0, Scaling(), 0),
        (1, 0, Scaling(), 1),
        (0, 7, Scaling(max_inputs=4), 2),
        (10, 6, Scaling(max_inputs=20, target_inputs=4), 4),
        (1000, 0, Scaling(max_containers=3), 3),
        (0, 0, Scaling(min_containers=2), 2),
        (1, 0, Scaling(buffer_containers=2), 3),
        (0, 0, Scaling(buffer_containers=2), 0),  # the buffer counts only while busy
        (1, 0, Scaling(buffer_containers=2, max_containers=2), 2),
    ],
)
def test_desired_containers(queued: int, running: int, scaling: Scaling, expected: int) -> None:
    assert desired_containers(queued, running, scaling) == expected


def test_idle_containers_stop_after_the_window_longest_idle_first() -> None:
    scaling = Scaling(scaledown_window=10)
    snap = dataclasses.replace(BASE, now=100.0, scaling=scaling, containers=views(95.0, 85.0, 89.0))
    decision = decide(snap)
    assert decision.stop == ("c1", "c2")  # idle 15 s and 11 s; c0 only 5 s
    assert decision.recheck_at == 105.0


def test_scale_down_never_goes_below_min_containers() -> None:
    scaling = Scaling(min_containers=2, scaledown_window=1)
    snap = dataclasses.replace(BASE, scaling=scaling, containers=views(0.0, 0.0, 0.0))
    assert len(decide(snap).stop) == 1


def test_busy_containers_are_never_stopped() -> None:
    scaling = Scaling(scaledown_window=1)
    snap = dataclasses.replace(BASE, running=1, scaling=scaling, containers=views(None, 0.0))
    assert decide(snap).stop == ("c1",)
    snap = dataclasses.replace(BASE, running=2, scaling=scaling, containers=views(None, None))
    assert decide(snap) == decide(dataclasses.replace(snap, now=1e9))
    assert decide(snap).stop == ()


def test_nothing_to_do_means_no_recheck() -> None:
    snap = dataclasses.replace(BASE, running=20, containers=views(None))
    decision = decide(snap)
    assert (decision.start, decision.stop, decision.recheck_at) == (0, (), None)


def test_recheck_is_a_timestamp_from_the_snapshot_clock() -> None:
    scaling = Scaling(scaledown_window=30)
    snap = dataclasses.replace(BASE, now=5.0, scaling=scaling, containers=views(1.0))
    assert decide(snap).recheck_at == 31.0
    assert decide(dataclasses.replace(snap, now=31.0)).stop == ("c0",)
