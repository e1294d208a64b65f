"""ray: Shoal on a two-node Ray cluster this benchmark starts, against the local backend
and against plain Ray, all in the same run.

Figures, each from a ``shoal server`` process on the Ray backend and, as the baseline,
one on the local backend (same client code, same machine):

- a burst of 100 x ``sleep(1)`` at 20 inputs per container from zero containers
  (agents warm): wall time and containers started;
- the first result from zero containers;
- a map of no-ops (20,000; 5,000 quick) with 1-core containers, one on each node (the
  nodes have a core each; the local backend runs two on this machine's two cores);
- ``.remote()`` p50.

Plain Ray in the same run, on the same cluster: a fresh actor's first call, an actor
call's p50, the same no-ops as Ray tasks, and through a pool of two actors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.cluster import LOOPBACK_ENV, start_cluster
from benchmarks.report import Result

_APP = """
import time
import shoal

app = shoal.App("raybench")


@app.function(scaledown_window=600)
@shoal.concurrent(max_inputs=20)
def sleepy(_: int) -> None:
    time.sleep(1)


@app.function(scaledown_window=600)
def first(x: int) -> int:
    return x


@app.function(cpu=1, scaledown_window=600)
@shoal.concurrent(max_inputs=200)
def noop(x: int) -> int:
    return x
"""

_CLIENT = """
import json, statistics, sys, time
import shoal
n, map_n = {n}, {map_n}
out = {{}}
first = shoal.Function.from_name("raybench", "first")
t = time.perf_counter(); first.remote(1); out["first_result_ms"] = (time.perf_counter() - t) * 1e3
sleepy = shoal.Function.from_name("raybench", "sleepy")
t = time.perf_counter(); list(sleepy.map(range(100)))
out["burst_wall_s"] = time.perf_counter() - t
out["burst_containers"] = sleepy.stats().containers_started
noop = shoal.Function.from_name("raybench", "noop")
list(noop.map(range(2000)))
t = time.perf_counter(); count = sum(1 for _ in noop.map(range(map_n)))
out["map_per_s"] = count / (time.perf_counter() - t)
for i in range(100):
    noop.remote(i)
samples = []
for i in range(n):
    t = time.perf_counter(); noop.remote(i); samples.append(time.perf_counter() - t)
out["p50_us"] = statistics.median(samples) * 1e6
print(json.dumps(out))
"""

_PLAIN_RAY = """
import json, statistics, sys, time
import ray
from ray.util.actor_pool import ActorPool
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
n, map_n = {n}, {map_n}
out = {{}}

@ray.remote(num_cpus=0)
class Echo:
    def call(self, x):
        return x

t = time.perf_counter(); echo = Echo.remote(); ray.get(echo.call.remote(1))
out["fresh_actor_ms"] = (time.perf_counter() - t) * 1e3
for i in range(100):
    ray.get(echo.call.remote(i))
samples = []
for i in range(n):
    t = time.perf_counter(); ray.get(echo.call.remote(i)); samples.append(time.perf_counter() - t)
out["actor_call_p50_us"] = statistics.median(samples) * 1e6

@ray.remote(num_cpus=0)
def noop(x):
    return x

ray.get([noop.remote(i) for i in range(200)])
t = time.perf_counter(); ray.get([noop.remote(i) for i in range(map_n)])
out["tasks_per_s"] = map_n / (time.perf_counter() - t)
pool = ActorPool([Echo.remote(), Echo.remote()])
t = time.perf_counter()
count = sum(1 for _ in pool.map(lambda a, v: a.call.remote(v), range(map_n)))
out["actor_pool_per_s"] = count / (time.perf_counter() - t)
print(json.dumps(out))
"""


def _server(
    root: Path, backend: str, address: str, env: dict[str, str], client: str
) -> dict[str, float]:
    """Start ``shoal server --backend BACKEND``, deploy the app, run the client; its figures."""
    home = root / backend / "home"
    env = {**env, "SHOAL_HOME": str(home), "SHOAL_CONFIG": str(root / "none")}
    args = ["--backend", backend] + (["--ray-address", address] if backend == "ray" else [])
    server = subprocess.Popen(
        [sys.executable, "-m", "shoal.cli", "server", "--port", "0", "--http-port", "0", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (home / "server.json").exists():
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the {backend} server did not start")
            time.sleep(0.05)
        app = root / "raybench.py"
        app.write_text(_APP)
        deploy = [sys.executable, "-m", "shoal.cli", "deploy", str(app)]
        subprocess.run(deploy, env=env, check=True, capture_output=True)
        time.sleep(2.0)  # agents and fork servers up: the figures are from warm agents
        return _json(client, env)
    finally:
        server.terminate()
        server.wait(timeout=60)


def _json(code: str, env: dict[str, str], *args: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    found: dict[str, float] = json.loads(lines[-1])  # Ray may print lines of its own
    return found


def run(name: str, quick: bool) -> Result:
    result = Result(name)
    n, map_n = (300, 5_000) if quick else (2_000, 20_000)
    os.environ.update(LOOPBACK_ENV)
    # One core a node, as the machine has two: 1-core containers then run one a node,
    # as many as the local backend runs on the machine's two cores.
    cluster = start_cluster(nodes=[{"num_cpus": 1}, {"num_cpus": 1}])
    try:
        env = {**os.environ}
        env.pop("SHOAL_SERVER_URL", None)
        env.pop("SHOAL_TOKEN", None)
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder)
            client = _CLIENT.format(n=n, map_n=map_n)
            on_ray = _server(root, "ray", cluster.address, env, client)
            local = _server(root, "local", "", env, client)
        plain = _json(_PLAIN_RAY.format(n=n, map_n=map_n), env, cluster.address)
    finally:
        cluster.shutdown()
    result.figures.update(on_ray)
    for key in ("first_result_ms", "burst_wall_s", "map_per_s", "p50_us"):
        result.baseline[f"local_{key}"] = local[key]
    result.baseline.update(plain)
    result.figures["p50_vs_local"] = on_ray["p50_us"] / local["p50_us"]
    result.figures["map_vs_ray_tasks"] = on_ray["map_per_s"] / plain["tasks_per_s"]
    result.figures["map_vs_ray_actor_pool"] = on_ray["map_per_s"] / plain["actor_pool_per_s"]
    result.figures["first_result_vs_fresh_actor"] = (
        on_ray["first_result_ms"] / plain["fresh_actor_ms"]
    )
    result.notes = (
        f"2 Ray nodes of 1 core on 127.0.0.1; shoal server --backend ray vs --backend local; "
        f"100 x sleep(1) at 20 per container; {map_n}-input no-op map with 1-core containers; "
        f"{n} .remote() calls; plain Ray: actor, tasks, 2-actor pool, same sizes"
    )
    return result
