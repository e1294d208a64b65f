"""Faults from outside under load: every accepted input completes exactly once, correctly,
and nothing (process, thread, descriptor, directory) is left behind.

Each scenario is bounded: it counts results and waits for conditions, never for time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from benchmarks import faults as chaos

from apps import faulty
from conftest import wait_until
from shoal.control import run_dir


def test_containers_killed_every_half_second_lose_no_input_of_a_big_map() -> None:
    n = 20_000
    with faulty.app.run():
        faulty.double.remote(0)
        with chaos.killing_containers(every=0.5) as killed:
            results = list(faulty.double.map(range(n)))
        # In input order, one result per input: nothing lost, nothing twice, all correct.
        assert results == [2 * i for i in range(n)]
        assert len(killed) >= 2, "the map ended before the chaos had a chance"
        assert faulty.double.stats().containers_started > 1


def test_killing_the_fork_server_mid_map_loses_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_FORK_SERVER", "1")
    n = 5_000
    with faulty.app.run():
        faulty.double.remote(0)
        wait_until(lambda: bool(chaos.fork_servers()), what="a fork server")
        results = faulty.double.map(range(n))
        first = [next(results) for _ in range(100)]
        for server in chaos.fork_servers():
            os.kill(server, signal.SIGKILL)
        assert first + list(results) == [2 * i for i in range(n)]
        assert faulty.double.remote(21) == 42  # containers still start (fresh interpreters)


CALLER = """
import json, os, sys, time
sys.path.insert(0, {tests!r})
from apps import faulty
from shoal.server import embedded

with faulty.app.run():
    faulty.starts_child.remote({marker!r}, False)
    pid, parent = faulty.whereami.remote()
    calls = [faulty.double.spawn(i) for i in range(200)]  # in flight at the kill
    report = {{
        "containers": sorted({{pid}} | {{parent}} - {{os.getpid()}}),
        "dir": os.path.dirname(embedded.running().control.address),
    }}
    print(json.dumps(report), flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("fork_server", ["1", "0"])
def test_a_sigkilled_caller_leaves_nothing_behind(tmp_path: Path, fork_server: str) -> None:
    marker = f"{600 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 1000:03d}"
    tests = str(Path(__file__).resolve().parents[1])
    script = tmp_path / "caller.py"
    script.write_text(textwrap.dedent(CALLER.format(tests=tests, marker=marker)))
    caller = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        env={**os.environ, "SHOAL_FORK_SERVER": fork_server},
    )
    try:
        assert caller.stdout is not None
        report = json.loads(caller.stdout.readline())
        descendants = chaos.containers(caller.pid) | chaos.fork_servers(caller.pid)
    finally:
        caller.kill()
        caller.wait()
        if caller.stdout is not None:
            caller.stdout.close()
    left = set(report["containers"]) | descendants
    wait_until(lambda: not any(chaos.alive(pid) for pid in left), timeout=15, what="exits")
    wait_until(lambda: not chaos.with_cmdline(f"sleep {marker}"), timeout=15, what="user's child")
    assert Path(report["dir"]).exists()  # a SIGKILLed owner cannot clean up...
    run_dir.sweep()
    assert not Path(report["dir"]).exists()  # ...the next start does


def test_fifty_thousand_spawns_all_complete() -> None:
    n = 50_000
    with faulty.app.run():
        calls = [faulty.ident.spawn(i) for i in range(n)]
        assert [call.get(timeout=300) for call in calls] == list(range(n))
        assert faulty.ident.stats().queued == 0


def test_two_hundred_app_runs_leak_no_descriptor_thread_or_memory() -> None:
    def one_run() -> None:
        with faulty.app.run():
            assert faulty.exits.remote(-1) == -1

    for _ in range(10):  # warm up: imports, allocator pools, the loop thread
        one_run()
    fds, threads, rss = chaos.open_fds(), chaos.threads(), chaos.rss()
    for _ in range(200):
        one_run()
    assert chaos.open_fds() <= fds + 2
    assert chaos.threads() <= threads + 1
    assert chaos.rss() - rss < 20 * 1024 * 1024
