"""The control plane's event bus, heard from a test: real pools, real containers.

Each test subscribes to the embedded server's bus (the app runs on it) and checks
the events against what the calls did: every input exactly once through queued,
dispatched and finished, retries and failures with their reasons, and container
lives from starting to stopped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from apps import basic, warm
from conftest import wait_until
from shoal.server import embedded
from shoal.spec import events as ev


class Recorder:
    """Keeps every event of the pools whose key ends with ``.<function>``."""

    def __init__(self, function: str) -> None:
        self._suffix = "." + function
        self._lock = threading.Lock()
        self.events: list[Any] = []

    def __call__(self, event: Any) -> None:
        if event.function.endswith(self._suffix):
            with self._lock:
                self.events.append(event)

    def of(self, kind: type[Any]) -> list[Any]:
        with self._lock:
            return [e for e in self.events if isinstance(e, kind)]


@contextmanager
def hearing(function: str) -> Iterator[Recorder]:
    """Record ``function``'s events on the running embedded server's bus."""
    server = embedded.running()
    assert server is not None
    recorder = Recorder(function)
    unsubscribe = server.control.events.subscribe(recorder)
    try:
        yield recorder
    finally:
        unsubscribe()


def ids(events: list[Any]) -> list[str]:
    return [i for e in events for i in e.input_ids]


def test_every_input_of_a_map_is_queued_dispatched_and_finished_once() -> None:
    with basic.app.run():
        basic.echo.remote(0)  # the pool exists (and has a container) before the recording
        with hearing("echo") as heard:
            assert list(basic.echo.map(range(300))) == list(range(300))
            wait_until(lambda: len(ids(heard.of(ev.InputsFinished))) == 300, 10, "finished")
        queued = ids(heard.of(ev.InputsQueued))
        dispatched = heard.of(ev.InputsDispatched)
        finished = heard.of(ev.InputsFinished)
        assert len(queued) == len(set(queued)) == 300
        assert sorted(ids(dispatched)) == sorted(queued)
        assert sorted(ids(finished)) == sorted(queued)
        for event in finished:
            for _, wait, run in event.each():
                assert 0 <= wait < 30 and 0 <= run < 30
        assert {e.container_id for e in finished} <= {e.container_id for e in dispatched}
        decisions = heard.of(ev.ScalingDecided)
        assert decisions and all(d.queued >= 0 and d.running >= 0 for d in decisions)
        started = heard.of(ev.ContainerStarting)
        assert sum(d.start - d.awaiting_room for d in decisions) == len(started)
        assert not heard.of(ev.InputFailed) and not heard.of(ev.InputRetried)


def test_a_crash_a_retry_and_a_failure_are_told_with_their_reasons(tmp_path: Path) -> None:
    with basic.app.run(), hearing("die_once") as died, hearing("flaky") as flaky:
        with hearing("fail") as failing:
            basic.die_once.remote(str(tmp_path / "marker"))
            assert basic.flaky.remote(str(tmp_path / "counter"), 2) == 3
            with pytest.raises(basic.CustomError):
                basic.fail.remote("no")
        wait_until(lambda: died.of(ev.ContainerStopped), 10, "the crashed container")
        (stopped,) = died.of(ev.ContainerStopped)
        assert stopped.reason == "crash"
        assert stopped.detail in ("exited with code -9", "disconnected"), stopped.detail
        (retry,) = died.of(ev.InputRetried)
        assert (retry.reason, retry.attempt, retry.container_id) == (
            "crash",
            1,
            stopped.container_id,
        )
        assert len(ids(died.of(ev.InputsFinished))) == 1
        assert [(r.reason, r.attempt) for r in flaky.of(ev.InputRetried)] == [
            ("error", 1),
            ("error", 2),
        ]
        assert all(r.delay == pytest.approx(0.05) for r in flaky.of(ev.InputRetried))
        (failed,) = failing.of(ev.InputFailed)
        assert failed.error_type == "apps.basic.CustomError", failed
        assert "raised apps.basic.CustomError: no" in failed.message
        assert failed.container_id is not None and failed.run_time >= 0


def test_idle_containers_drain_and_stop_as_idle_and_the_app_s_end_as_stop(gate: Path) -> None:
    stats: Callable[[], Any] = warm.idles.stats
    with warm.app.run():
        with hearing("idles") as heard:
            calls = [warm.idles.spawn(str(gate)) for _ in range(3)]
            wait_until(lambda: stats().running == 3, what="3 running")
            gate.touch()
            for call in calls:
                call.get(timeout=60)
            wait_until(lambda: stats().containers == 1, what="idle-out to 1")
            assert stats().containers_stopped == {"idle": 2}
            ready = heard.of(ev.ContainerReady)
            assert len(ready) == 3 and all(0 < r.startup < 30 for r in ready)
            draining = heard.of(ev.ContainerDraining)
            assert [d.reason for d in draining] == ["idle", "idle"]
            gone = heard.of(ev.ContainerStopped)
            assert sorted(g.container_id for g in gone) == sorted(d.container_id for d in draining)
            assert {g.reason for g in gone} == {"idle"}
            assert all(g.lifetime > 0 for g in gone)
        server = embedded.running()
        assert server is not None
        ending = Recorder("idles")
        unsubscribe = server.control.events.subscribe(ending, ev.ContainerStopped)
    unsubscribe()
    assert [e.reason for e in ending.events] == ["stop"]  # the min_containers one


def test_a_subscriber_that_raises_is_dropped_and_the_pool_carries_on(
    capfd: pytest.CaptureFixture[str],
) -> None:
    heard: list[Any] = []

    def broken(event: Any) -> None:
        heard.append(event)
        raise RuntimeError("a bug in a subscriber")

    with basic.app.run():
        server = embedded.running()
        assert server is not None
        unsubscribe = server.control.events.subscribe(broken, ev.InputsFinished)
        assert basic.echo.remote(1) == 1
        assert list(basic.echo.map(range(50))) == list(range(50))
        unsubscribe()
    assert len(heard) == 1  # heard once, then dropped
    assert "a bug in a subscriber" in capfd.readouterr().err
