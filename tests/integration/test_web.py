"""Web endpoints over real HTTP on 127.0.0.1: each request is one input of the pool."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets.sync.client

from apps import web
from conftest import wait_until
from shoal.cli.serving import serving
from shoal.gateway.server import Served


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    monkeypatch.setenv("SHOAL_MAX_REQUEST_BYTES", str(1024 * 1024))
    monkeypatch.setenv("SHOAL_GATEWAY_TIMEOUT", "3")
    with web.app.run(), serving(web.app) as running:
        assert running is not None
        yield running


def test_each_decorator_kind_serves(served: Served) -> None:
    with httpx.Client(base_url=served.url, timeout=60) as client:
        assert client.post("/echo", json={"a": 1}).json() == {"echo": {"a": 1}}
        assert client.get("/square", params={"x": 7}).json() == {"square": 49}
        assert client.get("/api/hello/bob").json() == {"hello": "bob"}
        reply = client.get("/classic/some/path")
        assert (reply.status_code, reply.text) == (200, "wsgi says /some/path")
        assert client.get("/nowhere").status_code == 404
        assert client.get("/square", params={"x": "seven"}).status_code == 422  # FastAPI's own
    # each endpoint also has an origin of its own, whose root is the endpoint's root
    assert web.echo.web_url == served.origin_url("echo") != f"{served.url}/echo"
    assert httpx.post(web.echo.web_url, json={"b": 2}, timeout=60).json() == {"echo": {"b": 2}}
    api = served.origin_url("api")
    assert httpx.get(f"{api}/hello/ann", timeout=60).json() == {"hello": "ann"}
    assert httpx.get(f"{api}/nowhere", timeout=60).status_code == 404  # the app's own 404


def test_a_web_server_is_proxied(served: Served) -> None:
    with httpx.Client(base_url=served.url, timeout=60) as client:
        reply = client.get("/own_server/some/where", params={"q": "1"})
    assert (reply.status_code, reply.text) == (200, "own server saw /some/where?q=1")


def test_300_simultaneous_slow_requests_use_3_containers_burst_after_burst(
    served: Served, tmp_path: Path
) -> None:
    """Each burst is held at its handlers until all 300 run, so how fast one client
    sends them does not matter: 300 requests of max_inputs=100 need 3 containers, no
    fewer and no more, in the first burst (cold) and in those after it (warm)."""

    async def many(gate: Path) -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=300)
        async with httpx.AsyncClient(base_url=served.url, timeout=120, limits=limits) as client:
            requests = [client.get("/gated", params={"gate": str(gate)}) for _ in range(300)]
            return await asyncio.gather(*requests)

    async def burst(gate: Path) -> list[httpx.Response]:
        calls = asyncio.ensure_future(many(gate))
        try:
            await asyncio.to_thread(
                wait_until, lambda: web.gated.stats().running == 300, 60, "300 requests running"
            )
            stats = web.gated.stats()
            assert (stats.containers, stats.queued) == (3, 0)
        finally:
            gate.touch()  # noqa: ASYNC240 - one local file, the gate the handlers wait on
        return await calls

    pids: set[int] = set()
    for round in range(3):
        replies = asyncio.run(burst(tmp_path / f"gate-{round}"))
        assert [r.status_code for r in replies] == [200] * 300
        served_by = {r.json()["pid"] for r in replies}
        assert len(served_by) == 3, f"burst {round}"
        pids |= served_by
    assert len(pids) == 3  # the same three, kept warm between bursts


def test_a_streaming_response_arrives_incrementally(served: Served, gate: Path) -> None:
    with (
        httpx.Client(base_url=served.url, timeout=60) as client,
        client.stream("GET", "/api/stream", params={"gate": str(gate)}) as reply,
    ):
        lines = reply.iter_lines()
        assert next(lines) == "first"  # while the handler still waits on the gate
        gate.touch()
        assert next(lines) == "second"


def test_a_large_download_streams_through(served: Served) -> None:
    size = 0
    with (
        httpx.Client(base_url=served.url, timeout=120) as client,
        client.stream("GET", "/api/big", params={"megabytes": 64}) as reply,
    ):
        for chunk in reply.iter_bytes():
            size += len(chunk)
    assert size == 64 * 1024 * 1024


def test_websocket_echo(served: Served) -> None:
    url = served.url.replace("http://", "ws://") + "/api/ws"
    with websockets.sync.client.connect(url) as ws:
        ws.send("hello")
        assert ws.recv() == "echo: hello"
        ws.send("again")
        assert ws.recv() == "echo: again"
        ws.send("bye")


def test_error_statuses(served: Served) -> None:
    with httpx.Client(base_url=served.url, timeout=60) as client:
        assert client.get("/secret").status_code == 401
        authorized = {"Authorization": f"Bearer {served.token}"}
        assert client.get("/secret", headers=authorized).json() == {"secret": 42}
        assert client.get("/secret", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.post("/echo", content=b"x" * (2 * 1024 * 1024)).status_code == 413
        timed_out = client.get("/sleepy", params={"seconds": 30})
        assert timed_out.status_code == 504
        crashed = client.get("/crash")
        assert crashed.status_code == 502
        assert "ContainerCrashError" in crashed.text
        assert client.get("/sleepy", params={"seconds": 0}).json() == {"slept": 0}


def test_malformed_http_is_refused_before_user_code(served: Served) -> None:
    with socket.create_connection((served.host, served.port), timeout=10) as raw:
        raw.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        answer = raw.recv(1024)
    assert answer.startswith(b"HTTP/1.1 400")
    assert web.echo.stats().containers_started == 0


def test_a_class_of_web_endpoints_and_a_mixed_class_serve() -> None:
    app_file = Path(__file__).parents[1] / "apps" / "web_class.py"
    done = subprocess.run(
        [sys.executable, "-m", "shoal.cli", "run", "-q", str(app_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {
        "web": "hello bob",  # the enter hook ran in the endpoint's container
        "echo": {"a": 1},
        "same_container": True,  # a class's endpoints share its containers
        "ping": 100,
        "add": 102,
        "doubles": [2, 4, 6],
    }
    assert "WebApp.web: http://127.0.0.1:" in done.stderr


def test_an_experimental_http_server_class_is_served() -> None:
    app_file = Path(__file__).parents[1] / "apps" / "flash.py"
    done = subprocess.run(
        [sys.executable, "-m", "shoal.cli", "run", "-q", str(app_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"served": True, "url": True}
