"""A server with TLS: clients, lines and the gateway all speak it, and check its certificate."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.harness import ServerProcess, tls_files

CALLS = """
import json, shoal
square = shoal.Function.from_name("svc", "square")
print("remote", square.remote(7))
print("map", sum(square.map(range(10))))
print("url", shoal.Function.from_name("svc", "version").get_web_url())
"""


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    """A server whose listener and gateway use a certificate of a private CA; yields it
    (``svc`` deployed) and the CA's certificate file."""
    args, env, ca_file = tls_files(tmp_path)
    server = ServerProcess(tmp_path, env, args).start()
    try:
        server.deploy()
        yield server, ca_file
    finally:
        server.stop()


def test_clients_reach_a_tls_server_and_its_gateway(
    tls_server: tuple[ServerProcess, Path],
) -> None:
    server, ca_file = tls_server
    assert server.url.startswith("tls://")
    done = server.client(CALLS)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == ["remote 49", "map 285"]
    url = lines[2].removeprefix("url ")
    assert url.startswith("https://127.0.0.1:")
    trusting = ssl.create_default_context(cafile=str(ca_file))
    assert httpx.get(url, verify=trusting, timeout=10).json() == {"version": 1}
    assert httpx.get(f"{server.http}/svc/version", verify=trusting, timeout=10).status_code == 200
    with pytest.raises(httpx.ConnectError):  # the certificate is checked
        httpx.get(url, timeout=10)


def test_an_untrusted_certificate_or_plain_tcp_is_refused_clearly(
    tls_server: tuple[ServerProcess, Path],
) -> None:
    server, _ = tls_server
    untrusting = server.env
    untrusting.pop("SSL_CERT_FILE")
    done = server.client_with(untrusting, CALLS)
    assert done.returncode != 0
    assert "failed the TLS check" in done.stderr and "SSL_CERT_FILE" in done.stderr
    plain = server.env | {"SHOAL_SERVER_URL": server.url.replace("tls://", "tcp://")}
    done = server.client_with(plain, CALLS)
    assert done.returncode != 0
    assert "refused the token" in done.stderr or "closed" in done.stderr, done.stderr


def test_containers_reach_the_control_plane_over_tls_when_it_listens_on_tcp(
    tmp_path: Path,
) -> None:
    """With a certificate, containers that connect over TCP (as on a cluster) speak TLS:
    they pin the server's certificate (given to them, public) before sending a token
    (unjailed: a jailed container reaches no TCP, and a relay speaks TLS for it)."""
    args, env, _ = tls_files(tmp_path)
    args = (*args, "--isolation", "off")
    server = ServerProcess(tmp_path, {**env, "SHOAL_CONTAINER_TRANSPORT": "tcp"}, args).start()
    try:
        server.deploy()
        done = server.client(
            CALLS + "print(shoal.Function.from_name('svc', 'environment').remote()"
            "['SHOAL_CONTROL_CERT'] == open(" + repr(args[1]) + ").read())\n"
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[:2] == ["remote 49", "map 285"]
        assert done.stdout.splitlines()[-1] == "True"
    finally:
        server.stop()
