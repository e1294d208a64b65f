"""isolation: function containers in jails against plain ones, in the same run.

Each sample is a fresh process with its own embedded server, isolated
(``SHOAL_ISOLATION=on``) or not, alternating, so both see the same machine:

- ``cold``: the first result of an app that has just started (its fork server, which
  the jail holds, starts and imports while the call waits);
- ``warm fork``: the first result once the fork server has had a second to import:
  what a scale-up costs (the container is forked inside the jail, which exists);
- ``map``: inputs a second of ``.map`` over no-op inputs on two warm containers.

The goal: cold start at most twice the unisolated one, map within 10%.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from benchmarks.report import Result

#: Seconds the fork server gets to start (and its jail) before the warm-fork call.
WARM_UP = 1.0


def _child(n: int) -> None:
    """One sample, in this process: print its figures as JSON."""
    from benchmarks.apps import app, noop, noop_cold

    figures = {}
    with app.run():
        began = time.perf_counter()
        noop_cold.remote(1)
        figures["cold_ms"] = (time.perf_counter() - began) * 1e3
    with app.run():
        time.sleep(WARM_UP)
        began = time.perf_counter()
        noop_cold.remote(1)
        figures["warm_fork_ms"] = (time.perf_counter() - began) * 1e3
        list(noop.map(range(500)))  # both containers up
        began = time.perf_counter()
        list(noop.map(range(n)))
        figures["map_per_s"] = n / (time.perf_counter() - began)
        figures["jails"] = _jails()
    print(json.dumps(figures))


def _jails() -> int:
    """bwrap processes descended from this one (a check that the sample is what it says)."""
    parents: dict[int, int] = {}
    jails = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    head, _, tail = stat.read().rpartition(")")
            except OSError:
                continue
            parents[int(entry)] = int(tail.split()[1])
            if head.endswith("(bwrap"):
                jails.append(int(entry))
    mine = 0
    for pid in jails:
        while pid > 1 and pid != os.getpid():
            pid = parents.get(pid, 0)
        mine += pid == os.getpid()
    return mine


def _sample(isolated: bool, n: int) -> dict[str, float]:
    env = {**os.environ, "SHOAL_ISOLATION": "on" if isolated else "off"}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.isolation", str(n)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the isolation sample failed:\n{done.stderr[-3000:]}")
    found: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    if bool(found.pop("jails")) != isolated:
        raise RuntimeError(f"a sample with isolation {'on' if isolated else 'off'} ran otherwise")
    return found


def run(name: str, quick: bool) -> Result:
    from shoal.backends import isolation

    result = Result(name)
    why = isolation.problem()
    if why:
        result.notes = f"not measured: {why}"
        return result
    samples, n = (2, 1_000) if quick else (6, 5_000)
    plain: list[dict[str, float]] = []
    jailed: list[dict[str, float]] = []
    for _ in range(samples):  # alternate, so both see the same machine
        plain.append(_sample(False, n))
        jailed.append(_sample(True, n))
    for key in ("cold_ms", "warm_fork_ms", "map_per_s"):
        result.baseline[f"{key}_plain"] = statistics.median(s[key] for s in plain)
        result.figures[f"{key}_isolated"] = statistics.median(s[key] for s in jailed)
    result.figures["cold_ratio"] = result.ratio("cold_ms_isolated", "cold_ms_plain")
    result.figures["warm_fork_ratio"] = result.ratio("warm_fork_ms_isolated", "warm_fork_ms_plain")
    result.figures["map_ratio"] = result.ratio("map_per_s_isolated", "map_per_s_plain")
    result.notes = f"median of {samples} fresh processes each, alternating; map of {n} inputs"
    return result


if __name__ == "__main__":
    _child(int(sys.argv[1]))
