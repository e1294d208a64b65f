"""Classes with enter/exit hooks and parameters, @batched, and generators (issue: classes)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from apps import lifecycle
from conftest import wait_until
from shoal.exception import ContainerInitError, InvalidError


def test_enter_runs_once_per_container_not_per_input() -> None:
    with lifecycle.app.run():
        counter = lifecycle.Counter()
        results = list(counter.hit.starmap([()] * 16))
        results += [counter.ahit.remote() for _ in range(3)]  # methods share the containers
    assert {enters for _, enters, _ in results} == {1}
    assert len({pid for pid, _, _ in results}) <= 2


def test_exit_runs_on_scale_down(tmp_path: Path) -> None:
    marker = tmp_path / "exited"
    with lifecycle.app.run():
        counter = lifecycle.Counter(label="x", exit_marker=str(marker))
        pid, _, label = counter.hit.remote()
        assert label == "x"
        wait_until(marker.exists, timeout=20, what="the exit hook")  # scaledown_window=0.5
    assert marker.read_text() == str(pid)


def test_parameters_give_separate_pools() -> None:
    with lifecycle.app.run():
        a1 = lifecycle.Counter(label="a").hit.remote()
        b = lifecycle.Counter(label="b").hit.remote()
        a2 = lifecycle.Counter(label="a").hit.remote()
        assert lifecycle.Counter(label="b").hit.stats().containers_started == 1
    assert (a1[2], b[2]) == ("a", "b")
    assert a1[0] == a2[0] != b[0]


def test_bad_parameters_are_refused_at_the_caller() -> None:
    with pytest.raises(InvalidError, match="no parameter"):
        lifecycle.Counter(size=3)


def test_a_failing_enter_hook_fails_the_inputs_with_its_traceback() -> None:
    with lifecycle.app.run():
        broken = lifecycle.BrokenEnter()
        with pytest.raises(ContainerInitError, match="model file is missing") as info:
            broken.run.remote()
        assert "lifecycle.py" in str(info.value)
        results = list(broken.run.starmap([()] * 10, return_exceptions=True))
        assert all(isinstance(r, ContainerInitError) for r in results)
        assert broken.run.stats().containers_started <= 2


def test_batches_form_under_concurrent_load_and_never_exceed_the_maximum() -> None:
    with lifecycle.app.run():
        calls = [lifecycle.sizes.spawn(i) for i in range(30)]
        sizes = [call.get(timeout=60) for call in calls]
        started = time.monotonic()
        alone = lifecycle.sizes.remote(1)
        waited = time.monotonic() - started
    assert max(sizes) > 1
    assert max(sizes) <= 8
    assert alone == 1
    assert waited < 5  # a lone input waits about wait_ms (100 ms), not forever


def test_methods_can_be_batched_too() -> None:
    with lifecycle.app.run():
        scaler = lifecycle.Scaler(factor=3)
        results = list(scaler.scale.map(range(12)))
        assert scaler.scale.stats().containers_started == 1
    assert [value for value, _ in results] == [3 * x for x in range(12)]
    assert max(size for _, size in results) > 1
    assert max(size for _, size in results) <= 4


def test_batch_errors_reach_every_input() -> None:
    with lifecycle.app.run():
        results = list(lifecycle.batch_fails.map(range(4), return_exceptions=True))
        assert all(isinstance(r, ValueError) and "failed" in str(r) for r in results)
        with pytest.raises(Exception, match="one result per input"):
            lifecycle.wrong_length.remote(1)


def test_generator_values_arrive_before_it_finishes(gate: Path) -> None:
    with lifecycle.app.run():
        values = lifecycle.count_to.remote_gen(4, str(gate))
        assert next(values) == 1  # the generator is now blocked on the gate
        gate.touch()
        assert list(values) == [2, 3, 4]
        with pytest.raises(InvalidError, match="remote_gen"):
            lifecycle.count_to.remote(4, str(gate))


def test_async_generator_streams_through_aio(tmp_path: Path) -> None:
    gate = tmp_path / "agate"

    async def consume() -> list[int]:
        seen = []
        async for value in lifecycle.acount_to.remote_gen.aio(3, str(gate)):
            seen.append(value)
            gate.touch()
        return seen

    with lifecycle.app.run():
        assert asyncio.run(consume()) == [1, 2, 3]
