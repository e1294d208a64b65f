"""Pools scale on load exactly as DESIGN section 1 says; counts are exact, timing loose."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from apps import basic, warm
from conftest import wait_until
from shoal.exception import InvalidError


def test_100_inputs_at_20_per_container_use_exactly_5_and_the_101st_adds_a_6th(
    gate: Path,
) -> None:
    with basic.app.run():
        calls = [basic.gated.spawn(str(gate)) for _ in range(100)]
        wait_until(lambda: basic.gated.stats().running == 100, what="100 running")
        stats = basic.gated.stats()
        assert (stats.containers, stats.containers_started, stats.queued) == (5, 5, 0)

        calls.append(basic.gated.spawn(str(gate)))
        wait_until(lambda: basic.gated.stats().running == 101, what="101 running")
        assert basic.gated.stats().containers_started == 6

        gate.touch()
        pids = [call.get(timeout=60) for call in calls]
    assert len(set(pids)) == 6
    assert max(pids.count(p) for p in set(pids)) == 20


def test_containers_idle_out_down_to_min_containers(gate: Path) -> None:
    with warm.app.run():
        calls = [warm.idles.spawn(str(gate)) for _ in range(3)]
        wait_until(lambda: warm.idles.stats().running == 3, what="3 running")
        assert warm.idles.stats().containers == 3
        gate.touch()
        for call in calls:
            call.get(timeout=60)
        wait_until(lambda: warm.idles.stats().containers == 1, what="idle-out to 1")
        assert warm.idles.stats().containers_started == 3


def test_max_containers_queues_the_excess(gate: Path) -> None:
    with warm.app.run():
        calls = [warm.limited.spawn(str(gate)) for _ in range(5)]
        wait_until(lambda: warm.limited.stats().running == 2, what="2 running")
        stats = warm.limited.stats()
        assert (stats.containers, stats.queued) == (2, 3)
        gate.touch()
        pids = [call.get(timeout=60) for call in calls]
    assert len(set(pids)) == 2


def test_min_containers_start_with_no_traffic() -> None:
    with warm.app.run():
        wait_until(lambda: warm.warm.stats().ready == 2, what="2 warm containers")
        assert warm.warm.stats().containers_started == 2
        assert warm.old_spelling.spec.scaling.min_containers == 1  # keep_warm
        assert warm.old_spelling.spec.scaling.max_containers == 3  # concurrency_limit
        assert warm.old_spelling.spec.scaling.scaledown_window == 5  # container_idle_timeout
        wait_until(lambda: warm.old_spelling.stats().ready == 1, what="keep_warm container")


def test_buffer_containers_add_idle_capacity_while_busy(gate: Path) -> None:
    with warm.app.run():
        call = warm.buffered.spawn(str(gate))
        wait_until(lambda: warm.buffered.stats().ready == 2, what="1 busy + 1 buffer")
        gate.touch()
        call.get(timeout=60)


def test_a_container_bursts_past_target_only_when_all_are_at_target(gate: Path) -> None:
    with warm.app.run():
        calls = [warm.bursty.spawn(str(gate)) for _ in range(4)]
        wait_until(lambda: warm.bursty.stats().running == 4, what="4 running in one")
        assert warm.bursty.stats().containers == 1
        gate.touch()
        assert len({call.get(timeout=60) for call in calls}) == 1


def test_update_autoscaler_takes_effect_live() -> None:
    with warm.app.run():
        assert warm.adjustable.stats().containers == 0
        warm.adjustable.update_autoscaler(min_containers=2)
        wait_until(lambda: warm.adjustable.stats().ready == 2, what="2 after update")
        warm.adjustable.update_autoscaler(min_containers=0, scaledown_window=0.2)
        wait_until(lambda: warm.adjustable.stats().containers == 0, what="scale to zero")
        with pytest.raises(InvalidError, match="max_containers"):
            warm.adjustable.update_autoscaler(max_containers=0)

        async def from_a_loop() -> int:
            await warm.adjustable.update_autoscaler.aio(min_containers=1)
            return (await warm.adjustable.stats.aio()).containers_started

        assert asyncio.run(from_a_loop()) >= 2
