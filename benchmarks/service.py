"""service: a ``shoal server`` process, called from a separate client process over TCP.

Figures: sequential ``.remote()`` latency, a 20,000-input map, durable spawns
(10,000, sent concurrently so the server's group commits can batch them; and the
latency of one blocking ``.spawn()`` after another), and
the server's RSS with 100 idle deployed functions. Baselines, in the same run:
the embedded default (``app.run()`` in the caller, same client process) for
latency and map; and for latency also the chain floor, the same hops with no
Shoal code in them (see :class:`ChainFloor`), and for the embedded latency its own
floor (:class:`EmbeddedFloor`). Beside the times, the Python calls
each process makes per warm ``.remote()`` (:mod:`benchmarks.call_counts`), a count
that does not depend on how busy the machine is.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import multiprocessing
import os
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks import call_counts
from benchmarks.latency import round_trips
from benchmarks.report import Result


def _serve(handlers: dict[socket.socket, Callable[[bytes], object]]) -> None:
    """Run an asyncio loop that hands what each socket delivers to its handler, until
    a peer closes."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def readable(sock: socket.socket, handle: Callable[[bytes], object]) -> None:
            data = sock.recv(65536)
            if data:
                handle(data)
            elif not done.done():
                done.set_result(None)

        for sock, handle in handlers.items():
            sock.setblocking(False)
            loop.add_reader(sock.fileno(), readable, sock, handle)
        await done

    asyncio.run(main())


def _relay(client: socket.socket, worker: socket.socket) -> None:
    """The server's hop: an asyncio loop passing bytes between client and worker."""
    _serve({client: worker.send, worker: client.send})
    worker.close()


def _worker(sock: socket.socket) -> None:
    """A container's hops: its loop reads the input and hands it to a worker thread,
    which sends the reply itself."""
    jobs: queue.SimpleQueue[bytes] = queue.SimpleQueue()

    def thread() -> None:
        while True:
            sock.send(jobs.get())

    threading.Thread(target=thread, daemon=True).start()
    _serve({sock: jobs.put})


class ChainFloor:
    """The process chain of a ``.remote()`` through a server, with no Shoal code: a
    blocking client sends 64 bytes over loopback TCP to a relay process (an asyncio
    loop, as the server is), which passes them over a Unix socket to a worker process
    (an asyncio loop handing them to a thread, as a container running a sync function
    does); the thread answers and the relay passes the answer back. What Shoal adds
    on top is its own work; this is the floor under it on this machine."""

    def __init__(self) -> None:
        spawn = multiprocessing.get_context("spawn")
        listener = socket.create_server(("127.0.0.1", 0))
        self._sock = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        listener.close()
        for sock in (self._sock, accepted):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        inner, outer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._children = [
            spawn.Process(target=_relay, args=(accepted, inner)),
            spawn.Process(target=_worker, args=(outer,)),
        ]
        for child in self._children:
            child.start()
        for sock in (accepted, inner, outer):
            sock.close()

    def sample(self, n: int) -> list[float]:
        return round_trips(self._sock, n)

    def close(self) -> None:
        self._sock.close()  # the relay sees it, closes the worker's socket; both exit
        for child in self._children:
            child.join(timeout=10)
            if child.is_alive():
                child.terminate()
                child.join()


class EmbeddedFloor:
    """The hops of an embedded ``.remote()``, with no Shoal code: the calling thread hands
    64 bytes to an asyncio loop on another thread (as Shoal's background loop is), which
    writes them over a Unix socket to a worker process (as a container: its loop hands
    them to a thread, which answers); the loop reads the answer and wakes the caller."""

    def __init__(self) -> None:
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._child = multiprocessing.get_context("spawn").Process(target=_worker, args=(theirs,))
        self._child.start()
        theirs.close()
        self._sock.setblocking(False)
        self._waiting: concurrent.futures.Future[bytes] | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._loop.call_soon_threadsafe(self._loop.add_reader, self._sock.fileno(), self._read)

    def _read(self) -> None:
        data = self._sock.recv(65536)
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.set_result(data)

    def _send(self, message: bytes, answer: concurrent.futures.Future[bytes]) -> None:
        self._waiting = answer
        self._sock.send(message)

    def sample(self, n: int) -> list[float]:
        message, samples = b"x" * 64, []
        for _ in range(n):
            answer: concurrent.futures.Future[bytes] = concurrent.futures.Future()
            started = time.perf_counter()
            self._loop.call_soon_threadsafe(self._send, message, answer)
            answer.result(timeout=10)
            samples.append(time.perf_counter() - started)
        return samples

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._sock.close()  # the worker sees it and exits
        self._child.join(timeout=10)
        if self._child.is_alive():
            self._child.terminate()
            self._child.join()


_CLIENT = """
import asyncio, json, statistics, sys, time
import shoal
sys.path.insert(0, "benchmarks")
n, map_n, spawn_n = {n}, {map_n}, {spawn_n}

def percentiles(samples):
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return q[49] * 1e6, q[98] * 1e6

def measure(noop):
    for i in range(200):
        noop.remote(i)
    samples = []
    for i in range(n):
        t = time.perf_counter(); noop.remote(i); samples.append(time.perf_counter() - t)
    list(noop.map(range(2000)))
    t = time.perf_counter(); count = sum(1 for _ in noop.map(range(map_n)))
    rate = count / (time.perf_counter() - t)
    return (*percentiles(samples), rate)

out = {{}}
noop = shoal.Function.from_name("bench", "noop")
out["p50_us"], out["p99_us"], out["map_per_s"] = measure(noop)

async def spawn_all():
    t = time.perf_counter(); calls = []
    for _ in range(0, spawn_n, 1000):
        calls += await asyncio.gather(*(noop.spawn.aio(i) for i in range(1000)))
    rate = len(calls) / (time.perf_counter() - t)
    await shoal.FunctionCall.gather.aio(*calls)
    return rate

out["spawn_per_s"] = asyncio.run(spawn_all())
one_by_one = []
for i in range(n // 4):  # a blocking spawn waits until the input is on disk
    t = time.perf_counter(); noop.spawn(i); one_by_one.append(time.perf_counter() - t)
out["blocking_spawn_p50_us"] = percentiles(one_by_one)[0]

import os, tempfile
os.environ["SHOAL_HOME"] = tempfile.mkdtemp()  # no server to find: the embedded default
from apps import app, noop as local_noop
with app.run():
    assert app.runs_on_server is None
    out["embedded_p50_us"], out["embedded_p99_us"], out["embedded_map_per_s"] = measure(local_noop)
print(json.dumps(out))
"""

_IDLE = "import shoal\napp = shoal.App('idle')\n" + "".join(
    f"\n@app.function()\ndef f{i}(x):\n    return x\n" for i in range(100)
)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(name: str, quick: bool) -> Result:
    result = Result(name)
    n, map_n, spawn_n = (300, 5_000, 2_000) if quick else (2_000, 20_000, 10_000)
    floor = ChainFloor()
    floor.sample(200)
    floor_samples = floor.sample(n // 2)  # half before the client's run, half after
    embedded_floor = EmbeddedFloor()
    embedded_floor.sample(200)
    embedded_floor_samples = embedded_floor.sample(n // 2)
    with tempfile.TemporaryDirectory() as root:
        home = os.path.join(root, "home")
        env = {**os.environ, "SHOAL_HOME": home, "SHOAL_CONFIG": os.path.join(root, "none")}
        env.pop("SHOAL_SERVER_URL", None)
        env.pop("SHOAL_TOKEN", None)
        server = subprocess.Popen(
            [sys.executable, "-m", "shoal.cli", "server", "--port", "0", "--http-port", "0"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while not os.path.exists(os.path.join(home, "server.json")):
                if server.poll() is not None:
                    raise RuntimeError("the server did not start")
                time.sleep(0.05)
            deploy = [sys.executable, "-m", "shoal.cli", "deploy"]
            subprocess.run([*deploy, "benchmarks/apps.py", "--name", "bench"], env=env, check=True)
            client = subprocess.run(
                [sys.executable, "-c", _CLIENT.format(n=n, map_n=map_n, spawn_n=spawn_n)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            found = json.loads(client.stdout.strip().splitlines()[-1])
            before = _rss_mb(server.pid)
            idle = Path(root, "idle_app.py")
            idle.write_text(_IDLE)
            subprocess.run([*deploy, str(idle)], env=env, check=True, capture_output=True)
            time.sleep(1.0)
            after = _rss_mb(server.pid)
            floor_samples += floor.sample(n // 2)
            embedded_floor_samples += embedded_floor.sample(n // 2)
        finally:
            floor.close()
            embedded_floor.close()
            server.terminate()
            server.wait(timeout=30)
    for key in ("p50_us", "p99_us", "map_per_s", "spawn_per_s", "blocking_spawn_p50_us"):
        result.figures[key] = found[key]
    result.figures["server_rss_mb_100_idle_functions"] = after
    result.figures["rss_growth_mb_for_100_functions"] = after - before
    for key in ("p50_us", "p99_us", "map_per_s"):
        result.baseline[key] = found[f"embedded_{key}"]
    result.baseline["chain_floor_p50_us"] = statistics.median(floor_samples) * 1e6
    result.figures["p50_vs_embedded"] = found["p50_us"] / found["embedded_p50_us"]
    result.figures["p50_vs_chain_floor"] = found["p50_us"] / result.baseline["chain_floor_p50_us"]
    result.baseline["embedded_floor_p50_us"] = statistics.median(embedded_floor_samples) * 1e6
    result.figures["embedded_p50_vs_embedded_floor"] = (
        found["embedded_p50_us"] / result.baseline["embedded_floor_p50_us"]
    )
    result.figures["map_vs_embedded"] = found["map_per_s"] / found["embedded_map_per_s"]
    result.figures.update(call_counts.count(quick))
    result.notes = (
        f"client process -> server process over loopback TCP; {n} calls, {map_n}-input map, "
        f"{spawn_n} durable spawns (1,000 in flight); baselines: embedded app.run(), and "
        "the chain floor (client -> relay loop -> worker loop -> thread, no Shoal code)"
    )
    return result
