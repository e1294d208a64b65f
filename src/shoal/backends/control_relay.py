"""A Unix socket that carries jailed containers' connections to a control plane on TCP.

A jail reaches nothing of the host's network but the Unix sockets bound into it (see
:mod:`shoal.backends.jailed`), while a cluster's control plane listens on TCP on
another machine. So a backend that jails containers there (a Ray node's agent) listens on
a Unix socket in a folder of its own, binds it into each jail, and copies each connection's
bytes to the control plane's address and back: over TLS, checking the control plane's own
certificate (``SHOAL_CONTROL_CERT``: :func:`shoal.protocol.transport.pinned_tls`), when the
containers were told one. It reads nothing of what it carries: a container still says who
it is with its own token, which the control plane checks; the relay holds no secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket

from shoal.backends import isolation
from shoal.protocol import transport

#: The prefix of a relay's folder, before its process's pid (swept when that died).
_PRIVATE = "shoal-relay-"
#: Bytes copied per read.
_CHUNK = 256 * 1024


class Relay:
    """One listening Unix socket, relaying to :attr:`target` (see the module docstring)."""

    def __init__(self) -> None:
        isolation.sweep_folders(_PRIVATE)
        self._folder = isolation.private_folder(_PRIVATE)
        #: The Unix socket containers connect to (bound into their jails).
        self.path = os.path.join(self._folder, "control.sock")
        #: The control plane's ``tcp://HOST:PORT`` and the certificate it shows ("": none).
        self.target: tuple[str, str] | None = None
        self._server: asyncio.AbstractServer | None = None
        self._links: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        """Where a container in a jail reaches its control plane."""
        return "unix://" + self.path

    async def start(self) -> None:
        """Listen (once)."""
        if self._server is None:
            self._server = await asyncio.start_unix_server(self._serve, self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        try:
            if self.target is None:
                return  # no launch has said where the control plane is: nothing to reach
            address, certificate = self.target
            _, host, port = transport.parse(address)
            tls = transport.pinned_tls(certificate) if certificate else None
            try:
                up_reader, up_writer = await asyncio.open_connection(host, port, ssl=tls)
            except (OSError, ValueError):
                return  # the container sees its connection close, and says so
            _no_delay(up_writer)
            try:
                await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
            finally:
                up_writer.close()
        finally:
            writer.close()
            self._links.discard(task)

    async def close(self) -> None:
        """Stop listening, end every connection and remove the folder."""
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.cancel()
        await asyncio.gather(*self._links, return_exceptions=True)
        shutil.rmtree(self._folder, ignore_errors=True)


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy ``source`` to ``sink`` until it ends; then end ``sink``'s writing side."""
    with contextlib.suppress(OSError, ConnectionError):
        while chunk := await source.read(_CHUNK):
            sink.write(chunk)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()
        else:
            sink.close()


def _no_delay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
