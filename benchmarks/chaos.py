"""chaos: what faults cost. Inputs lost and run twice while containers are SIGKILLed
under a map, the time a pool takes to recover from a kill, and the latency of
healthy calls while the HTTP gateway is flooded with idle connections (against the
same calls without the flood, in the same run).
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import shoal
from benchmarks import faults
from benchmarks.report import Result
from shoal.cli.serving import serving

app = shoal.App("chaos")


@app.function(max_containers=4)
@shoal.concurrent(max_inputs=10)
def counted(i: int, log: str) -> int:
    """Records each run of input ``i`` (one appended line: atomic with O_APPEND)."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{i}\n".encode())
    finally:
        os.close(fd)
    time.sleep(0.002)
    return i


@app.function(max_containers=2, min_containers=2)
@shoal.concurrent(max_inputs=10)
def steady(i: int) -> int:
    return i


@app.function()
@shoal.fastapi_endpoint()
def ping() -> dict[str, bool]:
    return {"ok": True}


def _lost_and_repeated(n: int, result: Result) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        log = str(Path(scratch, "runs.log"))
        counted.remote(-1, log)
        with faults.killing_containers(every=0.5) as killed:
            outputs = list(counted.map(range(n), [log] * n, return_exceptions=True))
        runs = Counter(int(line) for line in Path(log).read_text().split())
    result.figures["inputs"] = n
    result.figures["containers_killed"] = len(killed)
    result.figures["inputs_lost"] = sum(1 for i, out in enumerate(outputs) if out != i)
    result.figures["inputs_run_twice_or_more"] = sum(1 for i in range(n) if runs[i] > 1)


def _recovery(kills: int, result: Result) -> None:
    steady.remote(0)
    times = []
    for _ in range(kills):
        before = steady.stats().ready
        victim = sorted(faults.containers())[0]
        started = time.perf_counter()
        os.kill(victim, signal.SIGKILL)
        while victim in faults.containers() or steady.stats().ready < before:
            time.sleep(0.001)
        assert steady.remote(1) == 1
        times.append(time.perf_counter() - started)
    result.figures["recovery_ms_p50"] = statistics.median(times) * 1e3
    result.figures["recovery_ms_max"] = max(times) * 1e3


def _latency(n: int) -> tuple[float, float]:
    samples = []
    for i in range(n):
        started = time.perf_counter()
        steady.remote(i)
        samples.append(time.perf_counter() - started)
    q = statistics.quantiles(samples, n=100)
    return q[49] * 1e6, q[98] * 1e6


def _flooded_latency(n: int, connections: int, result: Result) -> None:
    os.environ["SHOAL_GATEWAY_MAX_CONNECTIONS"] = str(connections // 2)
    with serving(app) as served:
        assert served is not None
        for _ in range(200):
            steady.remote(0)
        result.baseline["p50_us"], result.baseline["p99_us"] = _latency(n)
        flood = [socket.create_connection((served.host, served.port)) for _ in range(connections)]
        try:
            result.figures["p50_us_flooded"], result.figures["p99_us_flooded"] = _latency(n)
            import httpx

            response = httpx.get(f"{served.url}/ping", timeout=10)
            result.figures["http_ok_during_flood"] = float(response.status_code == 200)
        finally:
            for conn in flood:
                conn.close()
    del os.environ["SHOAL_GATEWAY_MAX_CONNECTIONS"]
    result.figures["p99_flooded_vs_quiet"] = (
        result.figures["p99_us_flooded"] / result.baseline["p99_us"]
    )


def run(name: str, quick: bool) -> Result:
    result = Result(name)
    with app.run():
        _lost_and_repeated(5_000 if quick else 20_000, result)
        _recovery(3 if quick else 10, result)
        _flooded_latency(500 if quick else 2_000, 400 if quick else 1_100, result)
    result.notes = (
        "one container SIGKILLed every 0.5 s during the map; recovery: kill to a ready "
        "replacement and a served call; latency: .remote() quiet vs under an idle-connection "
        "flood of twice the gateway's connection limit"
    )
    return result
