"""A small HTTP/1.1 load generator: N keep-alive connections, each sending GET requests
back to back for a fixed time. Run as ``python -m benchmarks.loadgen URL N SECONDS``;
prints one JSON line (requests/s, p50/p99 ms, errors). Only for 127.0.0.1 targets."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from urllib.parse import urlsplit


async def _connection(
    host: str, port: int, path: str, until: float, latencies: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(1)
            latencies.append(time.perf_counter() - started)
    finally:
        writer.close()


async def _run(url: str, connections: int, seconds: float) -> dict[str, float]:
    parts = urlsplit(url)
    assert parts.hostname in ("127.0.0.1", "localhost"), "load only loopback addresses"
    latencies: list[float] = []
    errors: list[int] = []
    until = time.perf_counter() + seconds
    started = time.perf_counter()
    await asyncio.gather(
        *(
            _connection(
                parts.hostname, parts.port or 80, parts.path or "/", until, latencies, errors
            )
            for _ in range(connections)
        )
    )
    elapsed = time.perf_counter() - started
    q = statistics.quantiles(latencies, n=100)
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": q[49] * 1e3,
        "p99_ms": q[98] * 1e3,
        "requests": float(len(latencies)),
        "errors": float(len(errors)),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_run(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))))
