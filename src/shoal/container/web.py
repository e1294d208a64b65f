"""Inside a container: turn a web function into one ASGI app, and run one request on it.

The gateway sends each HTTP request (or websocket) as one input whose arguments
are an envelope: the ASGI scope and, for HTTP, the first chunk of the request
body. :func:`serve_request` runs the app on it. Flow control runs both ways, so
neither a fast sender nor a slow reader piles up memory anywhere along the way:

- out: every event the app sends (``http.response.start``, each body chunk,
  websocket messages) goes back as an ``Item`` as soon as it is sent. Body bytes
  and websocket messages count against ``WINDOW``; the app's ``send`` waits
  while the client has not taken that much (the gateway returns ``Credit``);
- in: the rest of a request body, and a websocket's messages from the client,
  arrive as ``Feed`` messages only as far as this side has granted credit: the
  container opens a window of ``FEED_WINDOW`` bytes when the request starts
  and grants each event's cost again once the app has received it
  (:mod:`shoal.protocol.flow`).
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from shoal.protocol import payload
from shoal.protocol.flow import FEED_WINDOW, WINDOW, cost

ASGIApp = Callable[
    [dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


def build_app(fn: Callable[..., Any], spec: dict[str, Any]) -> ASGIApp:
    """The ASGI app for a web function (built once per container).

    Raises:
        Exception: whatever building the user's app raised (reported as a load failure).
    """
    kind = spec["kind"]
    if kind == "fastapi":
        from fastapi import FastAPI

        docs = spec.get("docs", False)
        web = FastAPI(
            docs_url="/docs" if docs else None,
            openapi_url="/openapi.json" if docs else None,
            redoc_url=None,
        )
        web.add_api_route("/", fn, methods=[spec["method"]])
        return web
    if kind == "asgi":
        return fn()  # type: ignore[no-any-return]
    if kind == "wsgi":
        from a2wsgi import WSGIMiddleware

        return WSGIMiddleware(fn())  # type: ignore[return-value]
    if kind == "web_server":
        return _Proxy(fn, spec["port"], spec.get("startup_timeout", 5.0))
    raise ValueError(f"unknown web endpoint kind {kind!r}")


class Stream:
    """One running request: events from the caller, and credit both ways.

    Args:
        grant: tells the gateway it may send ``n`` more bytes of events.
    """

    def __init__(self, grant: Callable[[int], None]) -> None:
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.grant = grant
        self.unacked = 0
        self.drained = asyncio.Event()
        self.drained.set()

    def credit(self, amount: int) -> None:
        """The client took ``amount`` more bytes of what the app sent."""
        self.unacked -= amount
        if self.unacked < WINDOW:
            self.drained.set()

    async def next_event(self) -> dict[str, Any]:
        """The next event from the client; its cost is granted back as it is taken."""
        event = await self.incoming.get()
        self.grant(cost(event))
        return event


async def serve_request(
    app: ASGIApp, envelope: dict[str, Any], stream: Stream, emit: Callable[[bytes], None]
) -> None:
    """Run ``app`` on one request; ``emit`` sends each pickled event back, in order."""
    scope = envelope["scope"]
    body: bytes = envelope.get("body", b"")
    more_body: bool = envelope.get("more_body", False)
    first = True
    if scope["type"] == "websocket" or more_body:
        stream.grant(FEED_WINDOW)  # the gateway may start sending what follows

    async def receive() -> dict[str, Any]:
        nonlocal first
        if scope["type"] == "http" and first:
            first = False
            return {"type": "http.request", "body": body, "more_body": more_body}
        if scope["type"] == "websocket" and first:
            first = False
            return {"type": "websocket.connect"}
        return await stream.next_event()

    async def send(event: dict[str, Any]) -> None:
        if event["type"] in ("http.response.body", "websocket.send"):
            stream.unacked += cost(event)
            if stream.unacked >= WINDOW:
                stream.drained.clear()
        emit(payload.dumps(event, "response event"))
        await stream.drained.wait()

    try:
        await app(scope, receive, send)
    except Exception:
        # The gateway answers 500 (or the app already did); the traceback would reach no
        # one, so it goes to the container's output, as an ASGI server logs it.
        path = scope.get("path", "")
        print(f"Exception in web app ({scope['type']} {path}):", file=sys.stderr)
        traceback.print_exc()
        raise


class _Proxy:
    """The ASGI face of a ``@web_server``: forwards each request to the user's own server."""

    def __init__(self, fn: Callable[..., Any], port: int, startup_timeout: float) -> None:
        self._fn = fn
        self._port = port
        self._timeout = startup_timeout
        self._started: asyncio.Task[None] | None = None

    async def _start(self) -> None:
        result = self._fn()
        if inspect.isawaitable(result):
            await result
        deadline = asyncio.get_running_loop().time() + self._timeout
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self._port)
            except OSError:
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(
                        f"nothing listens on port {self._port} after {self._timeout} s"
                    ) from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if self._started is None:
            self._started = asyncio.ensure_future(self._start())
        await self._started
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1011})
            return
        import httpx

        async def body() -> AsyncIterator[bytes]:
            more = True
            while more:
                event = await receive()
                if event["type"] != "http.request":
                    return  # the client went away
                yield event.get("body", b"")
                more = event.get("more_body", False)

        url = f"http://127.0.0.1:{self._port}{scope['path']}"
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in scope["headers"]
            if k.lower() != b"host"
        ]
        async with (
            httpx.AsyncClient() as client,
            client.stream(
                scope["method"],
                url,
                params=scope.get("query_string", b"").decode(),
                headers=headers,
                content=body(),
            ) as response,
        ):
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (k.encode(), v.encode())
                        for k, v in response.headers.items()
                        if k.lower() not in ("content-length", "transfer-encoding")
                    ],
                }
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
