"""A server with TLS: clients, lines and the gateway all speak it, and check its certificate."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from service.harness import ServerProcess

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
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file, ca_file = (tmp_path / n for n in ("cert.pem", "key.pem", "ca.pem"))
    cert.private_key_pem.write_to_path(str(key_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    ca.cert_pem.write_to_path(str(ca_file))
    args = ("--tls-cert", str(cert_file), "--tls-key", str(key_file))
    server = ServerProcess(tmp_path, {"SSL_CERT_FILE": str(ca_file)}, args).start()
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
    they pin the server's certificate (given to them, public) before sending a token."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file, ca_file = (tmp_path / n for n in ("cert.pem", "key.pem", "ca.pem"))
    cert.private_key_pem.write_to_path(str(key_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    ca.cert_pem.write_to_path(str(ca_file))
    args = ("--tls-cert", str(cert_file), "--tls-key", str(key_file))
    env = {"SSL_CERT_FILE": str(ca_file), "SHOAL_CONTAINER_TRANSPORT": "tcp"}
    server = ServerProcess(tmp_path, env, args).start()
    try:
        server.deploy()
        done = server.client(
            CALLS + "print(shoal.Function.from_name('svc', 'environment').remote()"
            "['SHOAL_CONTROL_CERT'] == open(" + repr(str(cert_file)) + ").read())\n"
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[:2] == ["remote 49", "map 285"]
        assert done.stdout.splitlines()[-1] == "True"
    finally:
        server.stop()
