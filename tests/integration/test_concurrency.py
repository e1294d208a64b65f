"""Several inputs at once inside one container: threads for sync, tasks for async."""

from __future__ import annotations

from pathlib import Path

import pytest

from apps import basic
from conftest import wait_until


def test_sync_inputs_run_on_distinct_threads_of_one_process() -> None:
    with basic.app.run():
        # Each input waits on a Barrier(10): the call passes only if all ten run at once.
        results = list(basic.barrier_sync.map([10] * 10))
    pids = {pid for pid, _ in results}
    threads = {thread for _, thread in results}
    assert len(pids) == 1
    assert len(threads) == 10


def test_async_inputs_run_as_tasks_on_one_thread() -> None:
    with basic.app.run():
        results = list(basic.barrier_async.map([10] * 10))
    assert len({pid for pid, _, _ in results}) == 1
    assert len({thread for _, thread, _ in results}) == 1
    input_ids = [input_id for _, _, input_id in results]
    assert len(set(input_ids)) == 10  # current_input_id() is per task
    assert all(i is not None for i in input_ids)


def test_current_function_call_id_matches_the_spawn() -> None:
    with basic.app.run():
        calls = [basic.whoami.spawn() for _ in range(5)]
        seen = [call.get(timeout=60) for call in calls]
    assert [call_id for _, call_id, _ in seen] == [call.object_id for call in calls]
    input_ids = [input_id for _, _, input_id in seen]
    assert len(set(input_ids)) == 5 and all(i and i.startswith("in-") for i in input_ids)


def test_a_container_never_runs_more_than_max_inputs(gate: Path) -> None:
    with basic.app.run():
        calls = [basic.peak.spawn(str(gate)) for _ in range(9)]
        wait_until(lambda: basic.peak.stats().running == 3, what="3 running")
        stats = basic.peak.stats()
        assert stats.queued == 6
        assert stats.containers == 1
        gate.touch()
        peaks = [call.get(timeout=60) for call in calls]
    assert max(peaks) == 3


def test_remote_aio_runs_many_calls_from_one_event_loop() -> None:
    import asyncio

    async def many() -> list[object]:
        return await asyncio.gather(*(basic.echo.remote.aio(i) for i in range(20)))

    with basic.app.run():
        assert asyncio.run(many()) == list(range(20))


def test_map_options_and_forms() -> None:
    import asyncio

    with basic.app.run():
        assert list(basic.echo.map(range(50))) == list(range(50))
        unordered = list(basic.echo.map(range(50), order_outputs=False))
        assert sorted(unordered) == list(range(50))  # type: ignore[type-var]
        assert list(basic.echo.starmap([(1,), (2,)])) == [1, 2]
        assert basic.echo.for_each(range(5)) is None

        async def via_aio() -> list[object]:
            return [x async for x in basic.echo.map.aio(range(10))]

        assert asyncio.run(via_aio()) == list(range(10))
        assert basic.echo.local(7) == 7


def test_container_output_reaches_the_caller_prefixed(capsys: pytest.CaptureFixture[str]) -> None:
    seen = {"out": "", "err": ""}

    def arrived() -> bool:
        captured = capsys.readouterr()
        seen["out"] += captured.out
        seen["err"] += captured.err
        return "out: hello" in seen["out"] and "err: hello" in seen["err"]

    with basic.app.run():
        basic.chatty.remote("hello")
        wait_until(arrived, timeout=10, what="container output")
    assert "[chatty-c1] out: hello" in seen["out"]
    assert "[chatty-c1] err: hello" in seen["err"]


def test_threads_printing_at_once_keep_their_lines_whole(
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen: list[str] = []

    def arrived() -> bool:
        seen.extend(capsys.readouterr().out.splitlines())
        return sum("voice" in line for line in seen) >= 400

    with basic.app.run():
        list(basic.chorus.map(range(20)))
        wait_until(arrived, timeout=20, what="every line")
    voices = [line for line in seen if "voice" in line]
    expected = {f"[chorus-c1] voice {n} round {r} of 20" for n in range(20) for r in range(20)}
    assert set(voices) == expected  # none split, none glued to another
