"""Containers reach their control plane over TCP as well as over a Unix socket."""

from __future__ import annotations

import contextlib
import socket
import struct
from pathlib import Path

import msgpack
import pytest

from apps import basic
from conftest import control_address, wait_until
from shoal.exception import InvalidError
from shoal.protocol.transport import parse


def test_addresses_parse_or_fail_clearly() -> None:
    assert parse("tcp://127.0.0.1:7420") == ("tcp", "127.0.0.1", 7420)
    assert parse("tcp://[::1]:80") == ("tcp", "::1", 80)
    assert parse("unix:///run/x.sock") == ("unix", "/run/x.sock", 0)
    assert parse("/run/x.sock") == ("unix", "/run/x.sock", 0)
    assert parse("tls://shoal.example.com:7420") == ("tls", "shoal.example.com", 7420)
    for bad in ("tcp://host", "tcp://:80", "tcp://h:99999", "tcp://h:x", "http://h:80", "tls://h"):
        with pytest.raises(InvalidError, match="expected"):
            parse(bad)


@pytest.mark.parametrize("fork_server", ["1", "0"])
def test_containers_over_tcp_run_calls_and_maps(
    monkeypatch: pytest.MonkeyPatch, fork_server: str
) -> None:
    monkeypatch.setenv("SHOAL_CONTAINER_TRANSPORT", "tcp")
    monkeypatch.setenv("SHOAL_FORK_SERVER", fork_server)
    with basic.app.run():
        address = control_address()
        assert address.startswith("tcp://127.0.0.1:")
        assert basic.echo.remote("over tcp") == "over tcp"
        assert list(basic.echo.map(range(500))) == list(range(500))
        with pytest.raises(basic.CustomError):
            basic.fail.remote("still typed")


def test_a_tcp_peer_without_the_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_CONTAINER_TRANSPORT", "tcp")
    with basic.app.run():
        _, host, port = parse(control_address())
        body = msgpack.packb([0, "basic-c1", "wrong", 1], use_bin_type=True)
        with socket.create_connection((host, port)) as peer:
            peer.sendall(struct.pack(">I", len(body)) + body)
            peer.settimeout(10)
            assert peer.recv(1) == b""  # closed without a word
        wait_until(lambda: basic.echo.remote(1) == 1, what="the control plane still serving")


def test_a_container_s_pin_passes_its_server_s_certificate_only(tmp_path: Path) -> None:
    """``pinned_tls`` takes the server's own certificate whatever host it names, and
    refuses another one, even from the same CA."""
    import ssl
    import threading

    import trustme

    from shoal.protocol.transport import leaf_certificate, pinned_tls, server_tls

    ca = trustme.CA()
    ours, other = ca.issue_cert("shoal.example.com"), ca.issue_cert("shoal.example.com")
    files = {}
    for name, cert in (("ours", ours), ("other", other)):
        files[name] = (tmp_path / f"{name}.pem", tmp_path / f"{name}.key")
        cert.cert_chain_pems[0].write_to_path(str(files[name][0]))
        cert.private_key_pem.write_to_path(str(files[name][1]))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    tls = server_tls(str(files["ours"][0]), str(files["ours"][1]))

    def serve() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            with contextlib.suppress(ssl.SSLError, OSError):
                tls.wrap_socket(conn, server_side=True).close()
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        good = pinned_tls(leaf_certificate(str(files["ours"][0])))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            good.wrap_socket(raw).close()  # 127.0.0.1 is not the name it bears: still pinned
        bad = pinned_tls(leaf_certificate(str(files["other"][0])))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with pytest.raises(ssl.SSLCertVerificationError):
                bad.wrap_socket(raw)
    finally:
        thread.join(10)
        listener.close()
