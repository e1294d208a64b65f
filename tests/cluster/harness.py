"""What the cluster tests share: a ``shoal server --backend ray`` on a cluster, and
ways to see what runs on it."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from benchmarks import faults

from conftest import wait_until
from service.harness import ServerProcess, tls_files

APP = Path(__file__).parent / "apps" / "cluster_app.py"


@contextlib.contextmanager
def ray_server_on(
    tmp_path: Path, address: str, tls: bool = False, more: tuple[str, ...] = ()
) -> Iterator[ServerProcess]:
    """``shoal server --backend ray`` on the cluster at ``address`` (with ``more``
    options), with the cluster app deployed (with ``tls``, a certificate of a private CA:
    its clients and containers speak TLS); once it stops, no Shoal process is left and no
    core of the cluster held."""
    args: tuple[str, ...] = ("--backend", "ray", "--ray-address", address, *more)
    env: dict[str, str] = {}
    if tls:
        tls_args, env, _ = tls_files(tmp_path)
        args += tls_args
    server = ServerProcess(tmp_path, env, args)
    shutil.copy(APP, server.apps / "cluster_app.py")
    server.start()
    try:
        server.deploy("cluster_app.py")
        yield server
    finally:
        server.stop()
        wait_until(lambda: not shoal_processes(), 30, "every container and fork server to end")
        assert cpus_held(address) == 0.0  # no placement group outlives the server


def cpus_held(address: str) -> float:
    """Cores of the cluster held by anyone (Shoal's placement groups, once it stopped),
    asked of the cluster by a driver of its own; it waits up to 20 s for them to go."""
    done = subprocess.run(
        [sys.executable, "-c", _HELD, address], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return float(done.stdout.strip().splitlines()[-1])


_HELD = """
import sys, time
import ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
for _ in range(100):
    held = ray.cluster_resources().get("CPU", 0) - ray.available_resources().get("CPU", 0)
    if held == 0:
        break
    time.sleep(0.2)
print(held)
"""


def nodes(address: str) -> dict[str, dict[str, float]]:
    """The alive nodes of the cluster at ``address``: node id -> its resources."""
    done = subprocess.run(
        [sys.executable, "-c", _NODES, address], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    alive: dict[str, dict[str, float]] = json.loads(done.stdout.strip().splitlines()[-1])
    return alive


_NODES = """
import json, sys
import ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
print(json.dumps({n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}))
"""


def shoal_processes() -> list[int]:
    """Pids of every Shoal container and fork server on this machine (on any node)."""
    return [
        pid
        for pid, (_, cmdline) in faults.processes().items()
        if b"shoal.container" in cmdline or b"shoal.backends.fork_server" in cmdline
    ]


def containers(server: ServerProcess, function: str) -> list[dict[str, Any]]:
    """The live containers of ``function``, each with its node."""
    done = server.cli("container", "list", "--json")
    assert done.returncode == 0, done.stderr
    listed: list[dict[str, Any]] = json.loads(done.stdout)
    return [c for c in listed if c["pool"].endswith(function) and c["state"] != "stopped"]


def client(server: ServerProcess, code: str) -> subprocess.Popen[str]:
    """A client process running ``code`` that the test talks to over stdin/stdout."""
    return subprocess.Popen(
        [sys.executable, "-c", "import shoal\n" + code],
        cwd=server.apps,
        env=server.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def end(proc: subprocess.Popen[str]) -> None:
    """Stop client ``proc`` if it still runs, and close its pipes."""
    proc.kill()
    proc.communicate()


def say(proc: subprocess.Popen[str]) -> str:
    """The next line ``proc`` prints."""
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line:
        assert proc.stderr is not None
        pytest.fail(f"the client ended: {proc.stderr.read()}")
    return line
