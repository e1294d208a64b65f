"""web: a handler that awaits asyncio.sleep(0.05), under 256 concurrent connections,
through Shoal (2 containers of max_inputs=100) against the same ASGI app on plain uvicorn.

The load comes from a separate process (benchmarks.loadgen) so it does not share an
interpreter with either server.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import shoal
from benchmarks.report import Result
from shoal.cli.serving import serving

app = shoal.App("bench-web")


async def sleepy_asgi(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def, type-arg]
    """The handler both servers run."""
    import asyncio

    if scope["type"] != "http":
        return
    await asyncio.sleep(0.05)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")],
        }
    )
    await send({"type": "http.response.body", "body": b"ok"})


@app.function(min_containers=2, max_containers=2)
@shoal.concurrent(max_inputs=100)
@shoal.asgi_app()
def sleepy():  # type: ignore[no-untyped-def]
    return sleepy_asgi


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _load(url: str, connections: int, seconds: float) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.loadgen", url, str(connections), str(seconds)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _plain(connections: int, seconds: float) -> dict[str, float]:
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "benchmarks.web:sleepy_asgi",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        return _load(f"http://127.0.0.1:{port}/", connections, seconds)
    finally:
        server.terminate()
        server.wait()


def run(name: str, quick: bool) -> Result:
    connections, seconds = 256, (3.0 if quick else 10.0)
    result = Result(name)
    plain = _plain(connections, seconds)
    with app.run(), serving(app) as served:
        assert served is not None
        while sleepy.stats().ready < 2:
            time.sleep(0.01)
        _load(served.url_for("sleepy"), 16, 0.5)  # warm the path
        shoal_figures = _load(served.url_for("sleepy"), connections, seconds)
    result.baseline.update({f"plain_{k}": v for k, v in plain.items()})
    result.figures.update({f"shoal_{k}": v for k, v in shoal_figures.items()})
    result.figures["rps_ratio"] = shoal_figures["rps"] / plain["rps"]
    result.figures["p99_ratio"] = shoal_figures["p99_ms"] / plain["p99_ms"]
    result.notes = f"{connections} connections, {seconds:g} s each, handler sleeps 50 ms"
    return result
