"""cpu=, memory= and gpu= on the local backend: containers never exceed the machine's
room, a memory limit is enforced, and impossible requests fail at once."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

import shoal
from apps import resourceful
from conftest import wait_until
from shoal.backends.base import this_machine
from shoal.exception import ContainerCrashError, InvalidError


def test_containers_never_take_more_cores_than_the_machine_has(gate: Path) -> None:
    with resourceful.app.run():
        calls = [resourceful.half_machine.spawn(str(gate)) for _ in range(5)]
        fn = resourceful.half_machine
        wait_until(lambda: fn.stats().running == 2, what="two containers running")
        stats = fn.stats()
        assert (stats.containers, stats.queued) == (2, 3)
        assert stats.awaiting_room >= 1  # the stats say why the rest wait
        gate.touch()
        assert len({call.get(timeout=60) for call in calls}) <= 5
        assert fn.stats().awaiting_room == 0


def test_a_container_over_its_memory_limit_is_stopped_with_a_clear_error() -> None:
    with resourceful.app.run():
        assert resourceful.hungry.spawn(10).get(timeout=60) == 10  # well under the limit
        with pytest.raises(ContainerCrashError, match="over its memory limit of 200 MiB"):
            resourceful.hungry.remote(400)


def test_a_request_the_machine_cannot_hold_fails_when_the_app_starts() -> None:
    if any("B200" in name for _, name in this_machine().gpus):
        pytest.skip("this machine has B200 GPUs")
    app = shoal.App("too-big")
    app.function(gpu="B200:8", serialized=True)(lambda: None)
    with pytest.raises(InvalidError, match="asks for 8 B200 GPU"), app.run():
        pass
    wide = shoal.App("too-wide")
    wide.function(cpu=this_machine().cpu * 4, serialized=True)(lambda: None)
    with pytest.raises(InvalidError, match="cores"), wide.run():
        pass


def test_region_and_cloud_are_accepted_with_one_warning_each() -> None:
    app = shoal.App("placed")
    with pytest.warns(UserWarning, match="region='us-east'"):
        app.function(region="us-east", serialized=True)(lambda: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        app.function(region="eu", serialized=True, name="again")(lambda: None)  # once only


def test_with_options_runs_a_variant_in_a_pool_of_its_own(gate: Path) -> None:
    with resourceful.app.run():
        narrow = resourceful.half_machine.with_options(max_containers=1, cpu=0.25)
        assert narrow.spec.name == "half_machine[cpu=0.25, max_containers=1]"
        calls = [narrow.spawn(str(gate)) for _ in range(3)]
        wait_until(lambda: narrow.stats().running == 1, what="one container of the variant")
        assert narrow.stats().queued == 2  # max_containers=1 holds the rest
        assert resourceful.half_machine.stats().containers_started == 0  # the original is apart
        gate.touch()
        assert len({call.get(timeout=60) for call in calls}) == 1
    with pytest.raises(InvalidError, match="does not take"):
        resourceful.half_machine.with_options(nonsense=1)
    with pytest.raises(InvalidError, match="max_containers"):
        resourceful.half_machine.with_options(max_containers=0)


def test_cls_with_options_gives_objects_pools_with_those_options() -> None:
    from apps import lifecycle

    with lifecycle.app.run():
        quick = lifecycle.Scaler.with_options(timeout=30, max_containers=2)
        obj = quick(factor=3)
        assert obj.scale.remote(5) == (15, 1)
        assert obj.scale.spec.timeout == 30
        assert obj.scale.spec.name.startswith("Scaler[max_containers=2, timeout=30](")


def test_a_container_going_idle_is_retired_for_a_pool_waiting_for_room(
    gate: Path, tmp_path: Path
) -> None:
    opened = tmp_path / "open"
    opened.touch()
    with resourceful.app.run():
        busy = resourceful.half_machine.with_options(scaledown_window=600)
        other = resourceful.half_machine.with_options(max_containers=1)
        held = [busy.spawn(str(gate)) for _ in range(2)]
        wait_until(lambda: busy.stats().running == 2, what="the machine full")
        waiting = other.spawn(str(opened))
        wait_until(lambda: other.stats().awaiting_room >= 1, what="the other pool refused")
        gate.touch()  # busy's containers finish and go idle, well inside their window
        for call in held:
            call.get(timeout=60)
        waiting.get(timeout=30)  # before: it waited out busy's 600 s scale-down window
        assert busy.stats().containers <= 1
