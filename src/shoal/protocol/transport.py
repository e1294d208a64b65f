"""Where a peer listens, and how to reach it: Unix socket paths and ``tcp://host:port``.

The same framed protocol runs over either. A Unix socket (a plain path, or
``unix://PATH``) serves peers on one machine and is guarded by its directory's
permissions as well as the token; TCP (``tcp://HOST:PORT``) carries peers on
other machines, and there the token in the first frame is the only key, so a
listener binds loopback unless it is told otherwise.

Example::

    >>> parse("tcp://127.0.0.1:7420")
    ('tcp', '127.0.0.1', 7420)
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
    """Split ``address`` into (kind, host or path, port); the port is 0 for a Unix socket
    (and, to listen, for "any free port").

    Raises:
        InvalidError: a ``tcp://`` address without a valid port, or an unknown scheme.
    """
    if address.startswith("tcp://"):
        host, _, port = address.removeprefix("tcp://").rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise InvalidError(f"{address!r}: expected tcp://HOST:PORT")
        return "tcp", host.strip("[]"), int(port)
    if "://" in address and not address.startswith("unix://"):
        raise InvalidError(f"{address!r}: expected a socket path, unix://PATH or tcp://HOST:PORT")
    return "unix", address.removeprefix("unix://"), 0


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` keeps a server unreachable from other machines."""
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


def tcp_address(host: str, port: int) -> str:
    """The ``tcp://`` form of a listening address (IPv6 hosts in brackets)."""
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


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
    return server, tcp_address(host, chosen)


def connect(address: str) -> socket.socket:
    """A blocking connection to ``address`` (the caller may make it non-blocking).

    Raises:
        OSError: nothing listens there.
    """
    kind, where, port = parse(address)
    if kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(where)
        return sock
    sock = socket.create_connection((where, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # frames are small and many
    sock.settimeout(None)
    return sock
