"""A sandbox's encrypted ports on the gateway: ``/_shoal/tunnels/<sandbox>/<port>/...``.

A sandbox created with ``encrypted_ports=[8000]`` has each of those ports forwarded by
its user-space network stack to a port on the host's loopback (nothing else can reach
it there but this machine). The gateway serves it to whoever holds the server's token:
each HTTP request under the tunnel's path is checked (``Authorization: Bearer ...``),
then relayed to the forwarded port with its method, headers and body, and the answer
relayed back as it comes. Plain HTTP only: a WebSocket upgrade through a tunnel is
refused (501); a port declared unencrypted is reached directly, with no token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final

import httpx

#: Where tunnels live on the gateway's port.
PREFIX: Final = "/_shoal/tunnels"
#: Headers that belong to one connection, not the request (never relayed), and the
#: token, which is the gateway's business, not the sandbox's.
_HOP = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"authorization",
    )
)
_CHUNK = 64 * 1024

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Tunnels:
    """The ASGI app of the tunnels' paths (see the module docstring).

    ``lookup(sandbox_id, port)`` gives the host port an encrypted port is forwarded to
    (None: no such tunnel); ``authorize(token)`` checks the server's token.
    """

    def __init__(
        self,
        lookup: Callable[[str, int], int | None],
        authorize: Callable[[str], bool],
        max_body: int,
        timeout: float,
    ) -> None:
        self._lookup = lookup
        self._authorize = authorize
        self._max_body = max_body
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None

    async def __call__(
        self, scope: dict[str, Any], receive: Receive, send: Send, token: str
    ) -> None:
        if scope["type"] != "http":
            await _reply(send, 501, "tunnels carry plain HTTP, not WebSockets")
            return
        if not self._authorize(token):
            await _reply(send, 401, "a tunnel needs the server's token: Authorization: Bearer ...")
            return
        sandbox, _, rest = scope["path"][len(PREFIX) + 1 :].partition("/")
        port_text, _, path = rest.partition("/")
        target = self._lookup(sandbox, int(port_text)) if port_text.isdigit() else None
        if target is None:
            await _reply(send, 404, f"no tunnel at {scope['path']!r}")
            return
        body = await self._body(receive)
        if body is None:
            await _reply(send, 413, f"request body over {self._max_body} bytes")
            return
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self._timeout))
        query = scope.get("query_string", b"").decode("latin-1")
        url = f"http://127.0.0.1:{target}/{path}" + (f"?{query}" if query else "")
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP]
        request = self._client.build_request(scope["method"], url, headers=headers, content=body)
        try:
            answer = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            await _reply(send, 502, f"the sandbox's port {port_text} did not answer: {exc}")
            return
        try:
            relayed = [(k, v) for k, v in answer.headers.raw if k.lower() not in _HOP]
            start = {"type": "http.response.start", "status": answer.status_code}
            await send({**start, "headers": relayed})
            async for chunk in answer.aiter_raw(_CHUNK):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await answer.aclose()

    async def _body(self, receive: Receive) -> bytes | None:
        """The whole request body (None: over the limit)."""
        body = bytearray()
        while True:
            event = await asyncio.wait_for(receive(), self._timeout)
            if event["type"] != "http.request":
                return bytes(body)
            body += event.get("body", b"")
            if len(body) > self._max_body:
                return None
            if not event.get("more_body"):
                return bytes(body)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


async def _reply(send: Send, status: int, detail: str) -> None:
    body = (detail + "\n").encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
