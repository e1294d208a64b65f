"""The pure autoscaling policy, driven by snapshots with an explicit clock."""

from __future__ import annotations

import dataclasses

import pytest

from shoal.control.autoscaler import (
    IdleContainer,
    PoolSnapshot,
    decide,
    desired_containers,
    surplus,
)
from shoal.spec.function import Scaling

BASE = PoolSnapshot(now=100.0, queued=0, running=0, live=0, idle=(), scaling=Scaling(max_inputs=20))


def idle(*idle_since: float) -> tuple[IdleContainer, ...]:
    """Idle containers c0, c1, ... (the caller lists them longest idle first)."""
    return tuple(IdleContainer(f"c{i}", since) for i, since in enumerate(idle_since))


def test_the_documented_example() -> None:
    snap = dataclasses.replace(BASE, queued=100)
    assert decide(snap).start == 5
    snap = dataclasses.replace(BASE, queued=101)
    assert decide(snap).start == 6
    # Five already starting: the 101st input adds exactly one.
    snap = dataclasses.replace(BASE, queued=101, live=5)
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
    snap = dataclasses.replace(BASE, now=100.0, scaling=scaling, live=3, idle=idle(85, 89, 95))
    decision = decide(snap)
    assert decision.stop == ("c0", "c1")  # idle 15 s and 11 s; c2 only 5 s
    assert decision.recheck_at == 105.0


def test_scale_down_never_goes_below_min_containers() -> None:
    scaling = Scaling(min_containers=2, scaledown_window=1)
    snap = dataclasses.replace(BASE, scaling=scaling, live=3, idle=idle(0, 0, 0))
    assert decide(snap).stop == ("c0",)
    assert surplus(0, 0, 3, scaling) == 1


def test_busy_containers_are_never_stopped() -> None:
    scaling = Scaling(scaledown_window=1)
    # Two live, one busy with an input, one idle: only the idle one may go.
    snap = dataclasses.replace(BASE, running=1, scaling=scaling, live=2, idle=idle(0))
    assert decide(snap).stop == ("c0",)
    snap = dataclasses.replace(BASE, running=2, scaling=scaling, live=2)
    assert decide(snap) == decide(dataclasses.replace(snap, now=1e9))
    assert decide(snap).stop == ()


def test_only_the_surplus_is_read() -> None:
    scaling = Scaling(max_inputs=1, scaledown_window=1)
    # Ten live, nine busy: one surplus container, however many idle ones are passed.
    snap = dataclasses.replace(BASE, running=9, scaling=scaling, live=10, idle=idle(0, 0, 0))
    assert surplus(0, 9, 10, scaling) == 1
    assert decide(snap).stop == ("c0",)


def test_nothing_to_do_means_no_recheck() -> None:
    snap = dataclasses.replace(BASE, running=20, live=1)
    decision = decide(snap)
    assert (decision.start, decision.stop, decision.recheck_at) == (0, (), None)


def test_recheck_is_a_timestamp_from_the_snapshot_clock() -> None:
    scaling = Scaling(scaledown_window=30)
    snap = dataclasses.replace(BASE, now=5.0, scaling=scaling, live=1, idle=idle(1.0))
    assert decide(snap).recheck_at == 31.0
    assert decide(dataclasses.replace(snap, now=31.0)).stop == ("c0",)
