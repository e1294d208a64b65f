"""Scheduled functions fire while their app runs, each run an input like any other."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from apps import scheduled
from conftest import wait_until


def test_a_period_fires_repeatedly_and_failures_do_not_stop_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    ticks = tmp_path / "ticks"
    ticks.touch()
    monkeypatch.setenv("TICKS", str(ticks))

    def count(word: str) -> int:
        return ticks.read_text().split().count(word)

    with scheduled.app.run():
        assert count("tick") == 0  # the first tick is one period after the start
        wait_until(lambda: count("tick") >= 3 and count("fail") >= 3, what="three runs of each")
        assert scheduled.tick.stats().containers_started == 1  # one warm container serves all
    fired = count("tick")
    err = capfd.readouterr().err
    assert "scheduled run of always_fails failed" in err and "a scheduled failure" in err
    time.sleep(1)  # must NOT fire: the app has stopped
    assert count("tick") == fired
