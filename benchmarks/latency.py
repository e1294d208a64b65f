"""latency: sequential warm ``.remote()`` calls, against a Unix-socket round trip floor."""

from __future__ import annotations

import multiprocessing
import socket
import statistics
import time

from benchmarks.apps import app, noop
from benchmarks.report import Result


def _percentiles(samples: list[float]) -> dict[str, float]:
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50_us": q[49] * 1e6, "p90_us": q[89] * 1e6, "p99_us": q[98] * 1e6}


def _echo(sock: socket.socket) -> None:
    while data := sock.recv(4096):
        sock.sendall(data)


def round_trips(sock: socket.socket, n: int) -> list[float]:
    """Seconds each of ``n`` round trips of a 64-byte message over ``sock`` takes."""
    message = b"x" * 64
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        sock.sendall(message)
        sock.recv(4096)
        samples.append(time.perf_counter() - started)
    return samples


class SocketFloor:
    """Round trips of a small message to another Python process over a Unix socket."""

    def __init__(self) -> None:
        self._ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._child = multiprocessing.get_context("spawn").Process(target=_echo, args=(theirs,))
        self._child.start()
        theirs.close()

    def sample(self, n: int) -> list[float]:
        return round_trips(self._ours, n)

    def close(self) -> None:
        self._ours.close()
        self._child.join()


def run(name: str, quick: bool) -> Result:
    n = 500 if quick else 2_000
    rounds = 4  # floor and Shoal take turns, so drift on a shared machine hits both
    result = Result(name)
    floor = SocketFloor()
    floor.sample(200)
    floor_samples: list[float] = []
    samples: list[float] = []
    with app.run():
        for i in range(200):  # warm: container up, code paths hot
            noop.remote(i)
        for _ in range(rounds):
            floor_samples += floor.sample(n // rounds)
            for i in range(n // rounds):
                started = time.perf_counter()
                noop.remote(i)
                samples.append(time.perf_counter() - started)
    floor.close()
    result.baseline.update(_percentiles(floor_samples))
    result.figures.update(_percentiles(samples))
    result.figures["p50_vs_floor"] = result.figures["p50_us"] / result.baseline["p50_us"]
    result.notes = f"{n} sequential calls, in {rounds} rounds alternating with the floor"
    return result
