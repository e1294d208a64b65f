"""Shoal on a real multi-node Ray cluster: the worked example spread over two nodes, a
custom resource that pins a function, containers that wait for a node that can hold
them, a node lost mid-map, and a server killed and restarted."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.harness import (
    client,
    containers,
    cpus_held,
    end,
    nodes,
    ray_server_on,
    say,
    shoal_processes,
)
from conftest import wait_until
from service.harness import ServerProcess


@pytest.fixture
def ray_server(tmp_path: Path, cluster: Any) -> Iterator[ServerProcess]:
    """``shoal server --backend ray`` on the session's cluster, the cluster app deployed."""
    with ray_server_on(tmp_path, cluster.address) as server:
        yield server


WORKED_EXAMPLE = """
held = shoal.Function.from_name('cluster', 'held')
calls = [held.spawn(i) for i in range(100)]
print('spawned 100', flush=True)
input()
calls.append(held.spawn(100))
print('spawned 101', flush=True)
input()
shoal.Queue.from_name('cluster-gate').put_many(list(range(101)))
print(sorted(c.get(timeout=120) for c in calls) == list(range(101)), flush=True)
print(held.stats().containers_started, flush=True)
"""


def test_the_worked_example_spreads_over_two_nodes(ray_server: ServerProcess) -> None:
    """100 inputs at 20 per container give 5 containers: 1 core each on nodes of 3
    cores, so 3 on one node and 2 on the other; the 101st input starts a 6th."""
    proc = client(ray_server, WORKED_EXAMPLE)
    try:
        assert say(proc) == "spawned 100"
        wait_until(lambda: len(containers(ray_server, "held")) == 5, 60, "5 containers")
        listed = containers(ray_server, "held")
        assert sorted(collections.Counter(c["node"] for c in listed).values()) == [2, 3]
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert say(proc) == "spawned 101"
        wait_until(lambda: len(containers(ray_server, "held")) == 6, 60, "a 6th container")
        by_node = collections.Counter(c["node"] for c in containers(ray_server, "held"))
        assert sorted(by_node.values()) == [3, 3]
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert say(proc) == "True"
        assert say(proc) == "6"
    finally:
        end(proc)


def test_a_custom_resource_pins_a_function_and_a_missing_one_waits(
    ray_server: ServerProcess, cluster: Any
) -> None:
    """``resources={"node_b": 1}`` runs only on the node that has it; a resource no node
    has keeps the containers waiting, and stats() says why."""
    node_b = next(
        n.node_id for n in cluster.worker_nodes if "node_b" in str(n._ray_params.resources)
    )
    out = ray_server.client(
        "import shoal\n"
        "print(shoal.Function.from_name('cluster', 'pinned').remote())\n"
        "missing = shoal.Function.from_name('cluster', 'needs_a_missing_node')\n"
        "call = missing.spawn()\n"
        "import time\n"
        "for _ in range(200):\n"
        "    stats = missing.stats()\n"
        "    if stats.awaiting_room and stats.waiting_for:\n"
        "        break\n"
        "    time.sleep(0.05)\n"
        "print(stats.awaiting_room, stats.containers, stats.queued)\n"
        "print(stats.waiting_for)\n"
        "call.cancel()\n"
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == node_b
    assert lines[1] == "1 0 1"
    assert "no node can hold" in lines[2] and "gpu_island" in lines[2]


def test_a_node_lost_mid_map_loses_no_input(ray_server: ServerProcess, cluster: Any) -> None:
    """A third node's raylet is killed while a map runs there: every result arrives
    exactly once, its containers are replaced on the other nodes, and nothing of the
    dead node's agent or containers is left running."""
    doomed = cluster.add_node(
        node_ip_address="127.0.0.1",
        include_dashboard=False,
        object_store_memory=80 << 20,
        num_cpus=3,
    )
    try:
        wait_until(lambda: doomed.node_id in nodes(cluster.address), 60, "the third node")
        # 3 s an input: the map outlasts the new node's agent coming up, even on a
        # loaded machine, so some of its containers start there.
        proc = client(
            ray_server,
            "where = shoal.Function.from_name('cluster', 'where')\n"
            "results = list(where.map(range(300), kwargs={'pause': 3.0}))\n"
            "print(sorted(i for i, _ in results) == list(range(300)), flush=True)\n"
            "print(len({pid for _, pid in results}), flush=True)\n",
        )
        wait_until(
            lambda: any(c["node"] == doomed.node_id for c in containers(ray_server, "where")),
            90,
            "a container on the third node",
        )
        doomed_pids = {
            c["pid"] for c in containers(ray_server, "where") if c["node"] == doomed.node_id
        }
        cluster.remove_node(doomed, allow_graceful=False)
        assert say(proc) == "True"
        assert int(say(proc)) > len(doomed_pids)  # others ran the lost inputs
        end(proc)
        wait_until(
            lambda: not doomed_pids & set(shoal_processes()), 30, "the dead node's containers"
        )
        assert all(c["node"] != doomed.node_id for c in containers(ray_server, "where"))
    finally:
        if doomed in cluster.worker_nodes:
            cluster.remove_node(doomed)


def test_a_killed_server_leaves_nothing_and_its_successor_runs_the_spawns(
    ray_server: ServerProcess,
) -> None:
    """SIGKILL the server: its agents and containers end on every node within seconds;
    the restarted server takes the cluster back and runs the stored spawns."""
    spawned = ray_server.client(
        "import shoal\n"
        "held = shoal.Function.from_name('cluster', 'held')\n"
        "print(' '.join(held.spawn(i).object_id for i in range(5)))\n"
    )
    assert spawned.returncode == 0, spawned.stderr
    ids = spawned.stdout.split()
    wait_until(lambda: len(containers(ray_server, "held")) == 1, 60, "a container")
    assert ray_server.proc is not None
    ray_server.proc.kill()
    ray_server.proc.wait()
    wait_until(lambda: not shoal_processes(), 30, "the containers and agents to end")
    ray_server.start()
    out = ray_server.client(
        "import shoal\n"
        "shoal.Queue.from_name('cluster-gate').put_many(list(range(5)))\n"
        f"print(sorted(shoal.FunctionCall.from_id(i).get(timeout=120) for i in {ids!r}))\n"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[0, 1, 2, 3, 4]"


EMBEDDED_APP = """
import os, shoal
app = shoal.App("embedded-on-ray")

@app.function(cpu=1)
def where(_: int = 0) -> str:
    return os.environ.get("SHOAL_NODE", "")
"""

EMBEDDED_RUN = """
from embedded_on_ray import app, where
with app.run():
    print(sorted(set(where.map(range(20)))) != [""], flush=True)
    print(where.remote() != "", flush=True)
"""


ISOLATED = """
import json
import shoal
looked = shoal.Function.from_name('cluster', 'looked').remote()
where = shoal.Function.from_name('cluster', 'where')
print(json.dumps(looked), flush=True)
print(sorted(i for i, _ in where.map(range(60))) == list(range(60)), flush=True)
"""


def test_isolated_containers_on_the_nodes_reach_the_server_through_a_relay(
    cluster: Any, tmp_path: Path
) -> None:
    """``--isolation on`` jails containers on each node; a jail reaches no TCP of the
    host, so each node's agent relays their connections to the server (over TLS here)."""
    more = ("--isolation", "on")
    with ray_server_on(tmp_path, cluster.address, tls=True, more=more) as server:
        out = server.client(ISOLATED)
        assert out.returncode == 0, out.stderr[-3000:]
        looked, mapped = out.stdout.splitlines()[-2:]
        seen = json.loads(looked)
        assert seen["node"]  # it ran on a node, through its agent
        assert {k: seen[k] for k in ("shadow", "no new privs", "seccomp")} == {
            "shadow": False,
            "no new privs": "1",
            "seccomp": "2",
        }
        assert seen["certificate in the container"] is False  # the relay speaks TLS
        assert mapped == "True"
        assert "left out" not in server.log.read_text()


def test_the_embedded_server_runs_on_ray_with_shoal_backend(cluster: Any, tmp_path: Path) -> None:
    """``SHOAL_BACKEND=ray`` puts an ``app.run()``'s containers on the cluster's nodes."""
    (tmp_path / "embedded_on_ray.py").write_text(EMBEDDED_APP)
    env = {**os.environ, "SHOAL_BACKEND": "ray", "SHOAL_RAY_ADDRESS": cluster.address}
    env["SHOAL_HOME"] = str(tmp_path / "home")
    done = subprocess.run(
        [sys.executable, "-c", EMBEDDED_RUN],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["True", "True"]
    wait_until(lambda: not shoal_processes(), 30, "the app's containers to end")
    assert cpus_held(cluster.address) == 0.0


def test_a_server_with_no_cluster_at_its_address_says_how_to_start_one(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="the ray extra is not installed")
    from service.harness import free_port

    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "shoal.cli",
            "server",
            "--backend",
            "ray",
            "--ray-address",
            address,
            "--port",
            "0",
            "--http-port",
            "0",
        ],
        env={**os.environ, "SHOAL_HOME": str(tmp_path / "home")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    lines = [x for x in done.stderr.strip().splitlines() if not x.startswith("warning:")]
    assert len(lines) == 1 and f"no Ray cluster at '{address}'" in lines[0]
    assert "ray start --head" in lines[0]
