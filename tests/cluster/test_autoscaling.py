"""Shoal on a Ray cluster whose autoscaler adds machines: containers that fit on no
node make Ray add one, start there once its agent is up, and the node is retired once
they are gone (Shoal's scaledown_window, then Ray's idle timeout). The server has a
certificate, so its containers reach it over TLS."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.harness import containers, nodes, ray_server_on
from conftest import wait_until

#: Seconds an added node may idle before Ray's autoscaler retires it.
IDLE_S = 5.0


@pytest.fixture(scope="module")
def autoscaling() -> Iterator[Any]:
    """A head of 2 cores whose autoscaler may add one node of type ``island`` (1 core,
    the custom resource ``gpu_island``); its own ports, directory and processes, so it
    runs beside the session's cluster and ends without touching it."""
    pytest.importorskip("ray", reason="the ray extra is not installed")
    from benchmarks.cluster import AutoscalingCluster

    # A short directory: Ray's Unix socket paths under it must stay under 108 bytes.
    root = tempfile.mkdtemp(prefix="shoal-as-", dir="/tmp")
    started = AutoscalingCluster(
        root,
        head_cpus=2,
        node_types={"island": {"resources": {"CPU": 1, "gpu_island": 1}}},
        idle_s=IDLE_S,
    )
    try:
        yield started.start()
    finally:
        started.stop()
        shutil.rmtree(root, ignore_errors=True)


WAIT_THEN_RUN = """
import time
import shoal
f = shoal.Function.from_name('cluster', 'needs_a_missing_node')
call = f.spawn()
waiting = ''
for _ in range(600):
    stats = f.stats()
    if stats.waiting_for:
        waiting = stats.waiting_for
        break
    time.sleep(0.05)
print(waiting, flush=True)
print(call.get(timeout=120), flush=True)
print(f.stats().containers_started, flush=True)
print(shoal.Function.from_name('cluster', 'pinned_certificate').remote(), flush=True)
"""


def test_a_node_is_added_for_containers_that_fit_nowhere_and_retired_after(
    autoscaling: Any, tmp_path: Path
) -> None:
    before = nodes(autoscaling.address)
    assert len(before) == 1 and "gpu_island" not in next(iter(before.values()))
    with ray_server_on(tmp_path, autoscaling.address, tls=True) as server:
        out = server.client(WAIT_THEN_RUN)
        assert out.returncode == 0, out.stderr
        waiting, node, started, control = out.stdout.splitlines()
        assert "no node can hold" in waiting and "gpu_island" in waiting
        assert node and node not in before  # on the node Ray added for it
        assert started == "1", server.cli("app", "logs", "cluster").stdout[-4000:]
        assert control == "True"  # the server has a certificate: containers pin it
        # The container idles out after scaledown_window (2 s); then the node idles
        # out after Ray's idle timeout, and the autoscaler retires it.
        wait_until(lambda: not containers(server, "needs_a_missing_node"), 60, "scaledown")
        wait_until(
            lambda: nodes(autoscaling.address).keys() == before.keys(),
            90,
            "Ray to retire the idle node",
        )
