"""A sandbox's ports from outside, on a real server: an encrypted one through the
gateway behind the server's token, an unencrypted one directly on the host's loopback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.harness import ServerProcess
from shoal.backends import netstack

if netstack.problem():
    pytest.skip(netstack.problem(), allow_module_level=True)

SERVE = (
    "import json, shoal\n"
    "app = shoal.App.lookup('tunnels', create_if_missing=True)\n"
    "sb = shoal.Sandbox.create('sh', '-c', 'echo hi > /root/hello.txt; "
    "python -m http.server 8000 & python -m http.server 8001', app=app,\n"
    "    encrypted_ports=[8000], unencrypted_ports=[8001])\n"
    "found = sb.tunnels()\n"
    "print(json.dumps({'id': sb.object_id, 'encrypted': found[8000].url,\n"
    "    'plain': found[8001].url, 'tcp': list(found[8001].tcp_socket)}))\n"
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    instance = ServerProcess(tmp_path).start()
    try:
        yield instance
    finally:
        instance.stop()


def _get(url: str, token: str = "") -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + 20
    while True:  # the sandbox's server may still be starting
        answer = httpx.get(url, headers=headers, timeout=10)
        if answer.status_code != 502 or time.monotonic() > deadline:
            return answer
        time.sleep(0.1)


def test_ports_are_reached_through_the_gateway_or_directly(server: ServerProcess) -> None:
    done = server.client(SERVE)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["encrypted"] == f"{server.http}/_shoal/tunnels/{found['id']}/8000"
    assert _get(found["encrypted"] + "/hello.txt").status_code == 401  # no token
    assert _get(found["encrypted"] + "/hello.txt", "wrong").status_code == 401
    answer = _get(found["encrypted"] + "/hello.txt", server.token)
    assert (answer.status_code, answer.text) == (200, "hi\n")
    assert (
        _get(f"{server.http}/_shoal/tunnels/{found['id']}/8001/", server.token).status_code == 404
    )
    host, port = found["tcp"]
    assert host == "127.0.0.1" and found["plain"] == f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            plain = httpx.get(found["plain"] + "/hello.txt", timeout=10)
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the unencrypted port never answered"
            time.sleep(0.1)
    assert (plain.status_code, plain.text) == (200, "hi\n")
