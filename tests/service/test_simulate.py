"""``shoal simulate``: a function's recorded traffic, replayed through the real pool on a
virtual clock, reproduces the recorded run with its own settings, and answers what-ifs."""

from __future__ import annotations

import json
import time
from pathlib import Path

from conftest import wait_until
from service.harness import ServerProcess

BURSTS = """
import time
import shoal
nap = shoal.Function.from_name("sim", "nap")
assert sum(nap.map([1.0] * 25)) == 25.0
time.sleep(5)  # the three containers idle out (scaledown_window=2)
assert sum(nap.map([1.0] * 15)) == 15.0
print(nap.stats().containers_started)
"""


def simulate(server: ServerProcess, *args: str) -> dict[str, object]:
    done = server.cli("simulate", "sim", "nap", "--json", *args)
    assert done.returncode == 0, done.stderr
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def test_a_replay_with_the_recorded_settings_reproduces_the_run(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path).start()
    try:
        server.deploy("sim_app.py")
        done = server.client(BURSTS)
        assert done.returncode == 0, done.stderr
        started = int(done.stdout.split()[-1])
        assert started == 5  # 25 inputs at 10 a container, then 15
        listed = lambda: json.loads(server.cli("container", "list", "--json").stdout)  # noqa: E731
        wait_until(lambda: not [c for c in listed() if c["state"] != "stopped"], 30, "scaledown")
        time.sleep(1.5)  # the recorder writes once a second
        answer = simulate(server)
        recorded = answer["recorded"]
        same = answer["runs"][0]["outcome"]  # type: ignore[index]
        assert recorded["inputs"] == same["inputs"] == 40  # type: ignore[index]
        assert recorded["cold_starts"] == 5 and recorded["peak_containers"] == 3  # type: ignore[index]
        assert same["cold_starts"] == 5 and same["peak_containers"] == 3  # type: ignore[index]
        ratio = same["container_seconds"] / recorded["container_seconds"]  # type: ignore[index]
        assert 0.7 < ratio < 1.3, (same, recorded)
        # What-ifs: half the inputs a container doubles the peak; one container at most
        # makes the inputs wait (the second burst's 15 inputs need two turns).
        narrow = simulate(server, "--max-inputs", "5")["runs"][0]["outcome"]  # type: ignore[index]
        assert narrow["peak_containers"] == 5  # type: ignore[index]
        single = simulate(server, "--max-containers", "1")["runs"][0]["outcome"]  # type: ignore[index]
        assert single["peak_containers"] == 1 and single["wait_p99"] > 1.0  # type: ignore[index]
        table = server.cli(
            "simulate", "sim", "nap", "--grid", "max_inputs=5,10,20", "--p99-wait", "500ms"
        )
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert lines[0] == "sim.nap: 40 inputs recorded"
        assert lines[2].startswith("recorded")
        assert [line.split()[0] for line in lines[3:]] == [
            "max_inputs=20",  # within the bound, cheapest first
            "max_inputs=10",
            "max_inputs=5",
        ]
        # The recording is on disk: a restarted server still has it.
        server.stop()
        server.start()
        assert simulate(server)["recorded"]["inputs"] == 40  # type: ignore[index]
    finally:
        server.stop()
