"""Shared helpers: waiting for conditions, and proof that no container outlives a test."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from benchmarks import faults, private_home
from benchmarks.cluster import LOOPBACK_ENV

# A Ray cluster of the tests lives on 127.0.0.1 (set before anything imports Ray).
os.environ.update(LOOPBACK_ENV)

# Tests never use the developer's own server or profile (a test that wants a server starts
# one and points its clients at it).
private_home("shoal-test-home-")

# Tests send Ctrl-C to the processes they start, which inherit an ignored SIGINT (and then
# never see it) when this run was started as a shell's background job: take it back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def wait_until(condition: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    """Return once ``condition()`` is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(0.02)


def container_pids(parent: int | None = None) -> set[int]:
    """Pids of live Shoal processes (containers, fork servers) descended from ``parent``
    (default: this process)."""
    root = os.getpid() if parent is None else parent
    processes = faults.processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in processes.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        cmdline = processes[pid][1]
        if b"shoal.container" in cmdline or b"shoal.backends.fork_server" in cmdline:
            found.add(pid)
        stack.extend(children.get(pid, []))
    return found


def run_in_terminal(command: list[str], timeout: float = 120) -> tuple[int, str]:
    """Run ``command`` with a pseudo-terminal as its stdout and stderr, as a user would;
    return its exit code and everything it drew."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env={**os.environ, "COLUMNS": "120", "TERM": "xterm"},
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    code = proc.wait(timeout=timeout)
    os.close(leader)
    return code, b"".join(chunks).decode(errors="replace")


@pytest.fixture(autouse=True)
def no_leftover_containers() -> Iterator[None]:
    """Every test must leave no container process behind."""
    yield
    wait_until(lambda: not container_pids(), timeout=10, what="containers to exit")


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Path]:
    """A path inputs wait on; opened (created) by the test, and at teardown regardless."""
    path = tmp_path / "gate"
    yield path
    path.touch()


def control_address() -> str:
    """Where containers of the app running on this process's embedded server connect."""
    from shoal.server import embedded

    server = embedded.running()
    assert server is not None, "no app runs on the embedded server"
    return server.control.address


@pytest.fixture(scope="session")
def cluster() -> Iterator[Any]:
    """A real two-node Ray cluster on 127.0.0.1 for the session (``.address``, its GCS;
    ``.head_node``, ``.worker_nodes``): 3 cores a node, and a custom resource ``node_b``
    on the second. Skipped where the ray extra is not installed."""
    pytest.importorskip("ray", reason="the ray extra is not installed")
    from benchmarks.cluster import start_cluster

    started = start_cluster(nodes=[{"num_cpus": 3}, {"num_cpus": 3, "resources": {"node_b": 1}}])
    try:
        yield started
    finally:
        import ray

        ray.shutdown()  # a test's backend joined as a driver: leave before the nodes go
        started.shutdown()
