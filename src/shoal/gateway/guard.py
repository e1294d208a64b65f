"""Limits that keep the gateway serving when clients misbehave, before any authentication.

The gateway listens where anyone who can connect may try, inside the process
that runs the control plane, so a client must not be able to hold its sockets,
memory or loop. :class:`ConnectionGuard` enforces, for one gateway:

- at most ``max_connections`` connections (SHOAL_GATEWAY_MAX_CONNECTIONS, also
  kept under half the process's file limit). At the limit a new connection
  evicts the connection that has waited longest for a request (an idle one: no
  request being read or answered); when every connection is busy, the newcomer
  gets ``503`` and is closed. A flood of idle connections therefore only ever
  churns itself, and a real request still gets in;
- a deadline for the request line and headers (SHOAL_GATEWAY_HEADER_TIMEOUT),
  from the moment the connection opens or a new request begins: a client that
  sends nothing, or one byte at a time, is closed (``408`` once it started).

Request bodies are not buffered here: the gateway streams them to the container
under credit (see :mod:`shoal.gateway.server`), and a body that stalls for
SHOAL_GATEWAY_BODY_TIMEOUT ends the request.

The guard plugs into uvicorn as subclasses of its httptools and websocket
protocols (:func:`protocols`), keyed by transport so a connection keeps its
place when it is upgraded to a websocket.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from shoal import settings

_LOG = logging.getLogger("shoal.gateway")

_503: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n"
    b"content-length: 39\r\nconnection: close\r\n\r\n"
    b"the gateway is at its connection limit\n"
)
_408: Final = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\n"
    b"content-length: 36\r\nconnection: close\r\n\r\n"
    b"the request headers came too slowly\n"
)


@dataclass(frozen=True)
class Limits:
    """The gateway's limits, from settings (see :mod:`shoal.settings`)."""

    max_connections: int
    header_timeout: float
    body_timeout: float

    @classmethod
    def from_settings(cls) -> Limits:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        cap = settings.gateway_max_connections()
        if soft != resource.RLIM_INFINITY:
            cap = min(cap, max(16, soft // 2))  # leave files for containers and pipes
        return cls(cap, settings.gateway_header_timeout(), settings.gateway_body_timeout())


class ConnectionGuard:
    """The connections of one gateway: counted, evictable while idle, timed while
    their headers arrive (see the module docstring).

    Each connection carries the time its header clock started (``None`` while a
    request is being answered). One sweep per half header timeout closes those
    past the deadline, so a request costs a few dictionary updates, not timers.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        #: Every open connection -> when its header clock started (None: answering).
        self._open: dict[asyncio.BaseTransport, float | None] = {}
        #: Connections waiting for a request (evictable), longest idle first.
        self._idle: OrderedDict[asyncio.BaseTransport, None] = OrderedDict()
        #: Connections whose request line or headers are arriving.
        self._reading: set[asyncio.BaseTransport] = set()
        self._sweep: asyncio.TimerHandle | None = None
        self.evicted = 0  # idle connections closed to make room

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, transport: asyncio.BaseTransport) -> bool:
        """Count a new connection; ``False`` (and a 503 sent) when there is no room."""
        if len(self._open) >= self.limits.max_connections:
            if self._idle:
                oldest, _ = self._idle.popitem(last=False)
                self.forget(oldest)
                self.evicted += 1
                oldest.close()
            else:
                if isinstance(transport, asyncio.WriteTransport):
                    transport.write(_503)
                transport.close()
                return False
        self._open[transport] = time.monotonic()
        self._idle[transport] = None
        if self._sweep is None:
            self._schedule_sweep()
        return True

    def reading(self, transport: asyncio.BaseTransport) -> None:
        """A request began on ``transport``: not evictable, its headers on the clock."""
        if transport in self._open:
            self._idle.pop(transport, None)
            self._reading.add(transport)
            if self._open[transport] is None:
                self._open[transport] = time.monotonic()

    def answering(self, transport: asyncio.BaseTransport) -> None:
        """``transport``'s headers are in: off the clock until its response is done."""
        if transport in self._open:
            self._reading.discard(transport)
            self._open[transport] = None

    def idle(self, transport: asyncio.BaseTransport) -> None:
        """``transport`` waits for its next request (evictable, on the clock)."""
        if transport in self._open:
            self._open[transport] = time.monotonic()
            self._idle[transport] = None
            self._idle.move_to_end(transport)

    def forget(self, transport: asyncio.BaseTransport) -> None:
        """``transport`` closed (or became a websocket, which keeps its place)."""
        self._open.pop(transport, None)
        self._idle.pop(transport, None)
        self._reading.discard(transport)

    def _schedule_sweep(self) -> None:
        period = max(0.05, self.limits.header_timeout / 2)
        self._sweep = asyncio.get_running_loop().call_later(period, self._swept)

    def _swept(self) -> None:
        self._sweep = None
        deadline = time.monotonic() - self.limits.header_timeout
        late = [t for t, since in self._open.items() if since is not None and since <= deadline]
        for transport in late:
            started = transport in self._reading
            self.forget(transport)
            if transport.is_closing():
                continue
            if started and isinstance(transport, asyncio.WriteTransport):
                transport.write(_408)
            transport.close()
        if self._open:
            self._schedule_sweep()


def protocols(guard: ConnectionGuard) -> tuple[type[asyncio.Protocol], type[asyncio.Protocol]]:
    """uvicorn's HTTP and websocket protocols, bound to ``guard``."""

    class GuardedHttp(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            guard.admit(transport)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            guard.reading(self.transport)

        def on_headers_complete(self) -> None:
            guard.answering(self.transport)
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.pipeline:
                guard.idle(self.transport)

        def connection_lost(self, exc: Exception | None) -> None:
            guard.forget(self.transport)
            super().connection_lost(exc)

        def handle_websocket_upgrade(self) -> None:
            guard.answering(self.transport)  # the websocket protocol owns the connection now
            super().handle_websocket_upgrade()

    class GuardedWebSocket(WebSocketsSansIOProtocol):
        def connection_lost(self, exc: Exception | None) -> None:
            guard.forget(self.transport)
            super().connection_lost(exc)

    return GuardedHttp, GuardedWebSocket


class RateLimitedLog:
    """An event loop exception handler that reports each kind of error at most once per
    ``period`` seconds, with a count of the ones it held back (an accept loop out of
    file descriptors would otherwise log the same line without end)."""

    def __init__(self, period: float = 10.0) -> None:
        self._period = period
        self._last: dict[str, tuple[float, int]] = {}

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        key = f"{context.get('message', '')}|{type(exc).__name__}|{getattr(exc, 'errno', '')}"
        now = time.monotonic()
        last, held = self._last.get(key, (float("-inf"), 0))
        if now - last < self._period:
            self._last[key] = (last, held + 1)
            return
        self._last[key] = (now, 0)
        if held:
            context = {**context, "message": f"{context.get('message')} ({held} more held back)"}
        loop.default_exception_handler(context)
