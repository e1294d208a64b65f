"""Where a peer listens, and how to reach it: Unix socket paths and ``tcp://host:port``.

The same framed protocol runs over either. A Unix socket (a plain path, or
``unix://PATH``) serves peers on one machine and is guarded by its directory's
permissions as well as the token; TCP (``tcp://HOST:PORT``) carries peers on
other machines, and there the token in the first frame is the only key, so a
listener binds loopback unless it is told otherwise; ``tls://HOST:PORT`` is TCP
wrapped in TLS (the peer's certificate is checked against the system's trusted
CAs, or those of ``SSL_CERT_FILE``, and must name HOST).

Example::

    >>> parse("tcp://127.0.0.1:7420")
    ('tcp', '127.0.0.1', 7420)
    >>> parse("tls://shoal.example.com:7420")
    ('tls', 'shoal.example.com', 7420)
    >>> parse("/tmp/shoal-x/control.sock")
    ('unix', '/tmp/shoal-x/control.sock', 0)
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable

from shoal.exception import InvalidError


def parse(address: str) -> tuple[str, str, int]:
    """Split ``address`` into (kind, host or path, port); the kind is ``unix``, ``tcp`` or
    ``tls``; the port is 0 for a Unix socket (and, to listen, for "any free port").

    Raises:
        InvalidError: a ``tcp://`` or ``tls://`` address without a valid port, or an
            unknown scheme.
    """
    scheme, _, rest = address.partition("://")
    if scheme in ("tcp", "tls") and rest:
        host, _, port = rest.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise InvalidError(f"{address!r}: expected {scheme}://HOST:PORT")
        return scheme, host.strip("[]"), int(port)
    if "://" in address and scheme != "unix":
        raise InvalidError(
            f"{address!r}: expected a socket path, unix://PATH, tcp://HOST:PORT or tls://HOST:PORT"
        )
    return "unix", address.removeprefix("unix://"), 0


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` keeps a server unreachable from other machines."""
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


def tcp_address(host: str, port: int, scheme: str = "tcp") -> str:
    """The ``tcp://`` (or ``tls://``) form of a listening address (IPv6 hosts in brackets)."""
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


async def listen(
    address: str,
    factory: Callable[[], asyncio.Protocol],
    tls: ssl.SSLContext | None = None,
) -> tuple[asyncio.Server, str]:
    """Serve ``factory`` at ``address``; return the server and the address peers use
    (``tcp://127.0.0.1:0`` listens on a free port and returns the one chosen). ``tls``
    wraps every TCP connection."""
    loop = asyncio.get_running_loop()
    kind, where, port = parse(address)
    if kind == "unix":
        return await loop.create_unix_server(factory, where), where
    server = await loop.create_server(factory, where, port, ssl=tls)
    host, chosen = server.sockets[0].getsockname()[:2]
    return server, tcp_address(host, chosen, "tls" if tls is not None else "tcp")


def connect(address: str) -> socket.socket:
    """A blocking connection to ``address`` (the caller may make it non-blocking; a
    ``tls://`` one has done its TLS handshake).

    Raises:
        OSError: nothing listens there (``ssl.SSLError``: its certificate is not trusted).
    """
    kind, where, port = parse(address)
    if kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(where)
        return sock
    sock = socket.create_connection((where, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # frames are small and many
    if kind == "tls":
        sock = client_tls().wrap_socket(sock, server_hostname=where)
    sock.settimeout(None)
    return sock


def client_tls() -> ssl.SSLContext:
    """How clients check a ``tls://`` server: the default trusted CAs (``SSL_CERT_FILE``
    adds a private CA) and the host name."""
    return ssl.create_default_context()


def pinned_tls(certificate: str) -> ssl.SSLContext:
    """How a container checks its control plane: that it shows exactly ``certificate``
    (PEM), the one the server was started with, whoever signed it and whatever host it
    names (a cluster's containers dial the server's address on their network, which the
    certificate may not name). No other certificate passes, not even one signed by the
    same CA: nothing else is trusted."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=certificate)
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the leaf alone is the anchor
    return context


def leaf_certificate(chain_file: str) -> str:
    """The first certificate (the server's own) of PEM file ``chain_file``."""
    with open(chain_file, encoding="ascii") as f:
        text = f.read()
    end = "-----END CERTIFICATE-----"
    start = text.find("-----BEGIN CERTIFICATE-----")
    stop = text.find(end, start)
    if start < 0 or stop < 0:
        raise InvalidError(f"{chain_file}: no PEM certificate in it")
    return text[start : stop + len(end)] + "\n"


def server_tls(cert: str, key: str) -> ssl.SSLContext:
    """A listener's TLS: the certificate chain in PEM file ``cert``, its key in ``key``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context
