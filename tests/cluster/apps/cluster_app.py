"""The app the cluster tests deploy on a Ray backend."""

from __future__ import annotations

import os
import time

import shoal

app = shoal.App("cluster")
#: Inputs of ``held`` wait here until the test lets them go (one item per input).
gate = shoal.Queue.from_name("cluster-gate", create_if_missing=True)


@app.function(cpu=1, scaledown_window=2)
@shoal.concurrent(max_inputs=20)
def held(i: int) -> int:
    """Runs until the test puts an item in the gate; returns ``i``."""
    gate.get(timeout=120)
    return i


@app.function(cpu=1, scaledown_window=30)
@shoal.concurrent(max_inputs=10)
def where(i: int, pause: float = 0.0) -> tuple[int, int]:
    """``i`` and the pid of the container that ran it (after ``pause`` seconds)."""
    time.sleep(pause)
    return i, os.getpid()


@app.function(resources={"node_b": 1}, scaledown_window=30)
def pinned() -> str:
    """Runs only on a node that has the custom resource ``node_b``."""
    return os.environ.get("SHOAL_NODE", "")


@app.function(resources={"gpu_island": 1}, scaledown_window=2)
def needs_a_missing_node() -> str:
    """No node has ``gpu_island`` at first: its containers wait for one to join (on an
    autoscaling cluster, one is added for them). Returns the node it ran on."""
    return os.environ.get("SHOAL_NODE", "")


@app.function(scaledown_window=2)
def pinned_certificate() -> bool:
    """Whether this container was given its control plane's certificate to check (it is
    when the server has one: then it connected over TLS)."""
    return os.environ.get("SHOAL_CONTROL_CERT", "").startswith("-----BEGIN CERTIFICATE-----")


@app.function(scaledown_window=2)
def looked() -> dict[str, object]:
    """What a container sees of its node (on a server with ``--isolation on``: a jail)."""
    try:
        with open("/etc/shadow"):
            shadow = True
    except OSError:
        shadow = False
    with open("/proc/self/status") as status:
        fields = dict(line.split(":\t", 1) for line in status if ":\t" in line)
    return {
        "shadow": shadow,
        "no new privs": fields["NoNewPrivs"].strip(),
        "seccomp": fields["Seccomp"].strip(),
        "node": os.environ.get("SHOAL_NODE", ""),
        "certificate in the container": "SHOAL_CONTROL_CERT" in os.environ,
    }
