"""Python function calls per warm ``.remote()`` through a server, in each process.

Deterministic where times are not: a profile hook counts every Python-level
call (``sys.setprofile``'s "call" events; C functions are not counted) made in
the client's calling thread, in the server (all its threads) and in the
function's container (all its threads) while K warm ``.remote()`` calls run one
after another. The server and its containers get the hook from a
``sitecustomize`` on ``PYTHONPATH`` (a server's containers keep ``PYTHONPATH``),
installed only in this counting run, which therefore runs slower than the
timed ones; it counts between SIGUSR1 and SIGUSR2, which this module sends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: Installed as sitecustomize in the server and its containers for this run only.
_HOOK = """
import os, signal, sys, threading
_folder = os.environ.get("SHOAL_BENCH_CALLS")
if _folder:
    _on = [False]
    _count = [0]

    def _profile(frame, event, arg):
        if event == "call" and _on[0]:
            _count[0] += 1

    def _start(*_):
        _count[0] = 0
        _on[0] = True

    def _stop(*_):
        _on[0] = False
        with open(os.path.join(_folder, str(os.getpid())), "w") as out:
            out.write(str(_count[0]))

    sys.setprofile(_profile)
    threading.setprofile(_profile)
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
"""

_CLIENT = """
import json, sys, threading
import shoal
k = {k}
noop = shoal.Function.from_name("bench", "noop")
for i in range(300):
    noop.remote(i)
print("warm", flush=True)
sys.stdin.readline()  # counting has started in the server and its containers
count = [0]
def profile(frame, event, arg):
    if event == "call":
        count[0] += 1
sys.setprofile(profile)
for i in range(k):
    noop.remote(i)
sys.setprofile(None)
print(json.dumps({{"client": count[0]}}), flush=True)
sys.stdin.readline()
"""


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (its containers and fork servers)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def count(quick: bool) -> dict[str, float]:
    """Calls per warm ``.remote()`` in the client's thread, the server, the container."""
    k = 200 if quick else 1000
    with tempfile.TemporaryDirectory() as root:
        hook, counts, home = Path(root, "hook"), Path(root, "counts"), Path(root, "home")
        hook.mkdir()
        counts.mkdir()
        (hook / "sitecustomize.py").write_text(_HOOK)
        env = {**os.environ, "SHOAL_HOME": str(home), "SHOAL_CONFIG": str(Path(root, "none"))}
        env.pop("SHOAL_SERVER_URL", None)
        env.pop("SHOAL_TOKEN", None)
        counted = {
            **env,
            "SHOAL_BENCH_CALLS": str(counts),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), env.get("PYTHONPATH")])),
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "shoal.cli", "server", "--port", "0", "--http-port", "0"],
            env=counted,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = None
        try:
            while not (home / "server.json").exists():
                if server.poll() is not None:
                    raise RuntimeError("the counting server did not start")
                time.sleep(0.05)
            deploy = [sys.executable, "-m", "shoal.cli", "deploy", "benchmarks/apps.py"]
            subprocess.run([*deploy, "--name", "bench"], env=env, check=True, capture_output=True)
            client = subprocess.Popen(
                [sys.executable, "-c", _CLIENT.format(k=k)],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert client.stdin is not None and client.stdout is not None
            assert client.stdout.readline().strip() == "warm"
            containers = _descendants(server.pid)
            _signal([server.pid, *containers], signal.SIGUSR1)
            time.sleep(0.5)  # the handlers run when each main thread next wakes
            client.stdin.write("\n")
            client.stdin.flush()
            found = json.loads(client.stdout.readline())
            _signal([server.pid, *containers], signal.SIGUSR2)
            deadline = time.monotonic() + 10
            while len(os.listdir(counts)) < 1 + len(containers) and time.monotonic() < deadline:
                time.sleep(0.05)
            client.stdin.write("\n")
            client.stdin.flush()
            client.wait(timeout=30)
            by_pid = {int(name): int(Path(counts, name).read_text()) for name in os.listdir(counts)}
        finally:
            if client is not None and client.poll() is None:
                client.kill()
                client.wait()
            server.terminate()
            server.wait(timeout=30)
    server_calls = by_pid.get(server.pid, 0)
    container_calls = sum(n for pid, n in by_pid.items() if pid != server.pid)
    return {
        "client_calls_per_remote": found["client"] / k,
        "server_calls_per_remote": server_calls / k,
        "container_calls_per_remote": container_calls / k,
    }
