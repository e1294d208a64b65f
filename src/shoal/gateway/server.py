"""The HTTP gateway: every request to a web endpoint becomes one input of its pool.

One uvicorn server, on the control plane's own event loop, serves every web
endpoint of an app under ``http://HOST:PORT/<function-name>/...`` (a server's under
``/<app>/<function>/``, through its resolver), and each endpoint also at the root of
a port of its own (:meth:`Served.open_origin`). For each
request the gateway submits the ASGI scope and the first chunk of the body as
one input, streams the rest of the body to the container as the container grants
credit (refusing more than SHOAL_MAX_REQUEST_BYTES with 413, and a body that
stalls for SHOAL_GATEWAY_BODY_TIMEOUT with 408), and relays the response events
the container streams back, granting the container credit for each only once the
client has taken it. Websockets are relayed both ways under the same credit, so
neither a flooding client nor one that never reads grows any process (see
:mod:`shoal.protocol.flow`, :mod:`shoal.container.web`). Errors map to status
codes: 401 without the token on an endpoint that requires it, 404 for an unknown
endpoint, 504 when no response starts within SHOAL_GATEWAY_TIMEOUT (or the
function times out), 502 when containers died under the request until the retries
ran out, 500 when the app failed before responding. Malformed HTTP never gets this far: uvicorn
answers it with 400. Connection limits and header deadlines are
:mod:`shoal.gateway.guard`'s.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import uvicorn

from shoal import log, settings
from shoal.exception import ContainerCrashError, FunctionTimeoutError
from shoal.gateway import guard
from shoal.gateway.tunnels import PREFIX as TUNNELS
from shoal.gateway.tunnels import Tunnels
from shoal.protocol import payload
from shoal.protocol.flow import cost
from shoal.spec.histogram import Histogram

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

#: Marks the end of an input's events in its queue.
_END: Final[Any] = object()
#: Scope keys that travel to the container (the rest may not pickle, or not matter).
_SCOPE_KEYS: Final = (
    "type",
    "asgi",
    "http_version",
    "method",
    "scheme",
    "path",
    "raw_path",
    "query_string",
    "headers",
    "client",
    "server",
    "subprotocols",
)


class WebRecord(Protocol):
    """What the gateway reads of one request's input: the control plane's record
    (``shoal.control.calls.WebRecord``) or a handle's (``shoal.client.record.CallRecord``)."""

    @property
    def done(self) -> bool: ...

    #: The pickled return value, once the app returned (None before, or after an error).
    result: bytes | None
    #: Why it failed, once it failed.
    error: BaseException | None
    #: Called with each grant of request-body credit from the app.
    on_credit: Callable[[int], None] | None


class WebPool(Protocol):
    """What the gateway needs of a pool (``shoal.control.pool.Pool``, or a handle's). The
    records it takes back are the ones its ``submit`` made (typed ``Any``: each pool
    has a record type of its own)."""

    def submit(
        self,
        args: bytes,
        on_done: Callable[[Any], None],
        method: str = "",
        on_item: Callable[[bytes], None] | None = None,
    ) -> WebRecord: ...

    def cancel(self, record: Any) -> None: ...

    def credit(self, record: Any, amount: int) -> None: ...

    def feed(self, record: Any, data: bytes) -> None: ...


@dataclass(frozen=True)
class Route:
    """One web endpoint: how to find its pool now, and whether it needs the token."""

    pool: Callable[[], WebPool]
    requires_auth: bool
    #: The method of a class that serves it ("" for a function).
    method: str = ""


#: Finds the route of a request path: (route, its name, the rest of the path), or
#: None for a path that names no endpoint.
Resolver = Callable[[str], "tuple[Route, str, str] | None"]


class HttpTally:
    """Requests answered, by endpoint (as the gateway routed it: ``app/function`` on a
    server), method and status, and their durations by endpoint."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str, int]] = Counter()
        self.seconds: dict[str, Histogram] = {}

    def add(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.counts[endpoint, method, status] += 1
        kept = self.seconds.get(endpoint)
        if kept is None:
            kept = self.seconds[endpoint] = Histogram()
        kept.add(seconds)


#: The server's own prefix on the gateway's port: no app name can take it.
CONSOLE: Final = "/_shoal"


@dataclass(frozen=True)
class Page:
    """One of the server's own pages on the gateway's port (``/metrics``): ``render``
    gives its content type and body. It needs ``authorize`` to accept the request's
    bearer token (the server's token, not the endpoints') unless ``public``."""

    render: Callable[[], tuple[str, bytes]]
    authorize: Callable[[str], bool]
    public: bool = False


class Gateway:
    """The ASGI app uvicorn serves: routes requests to pools (see the module docstring)."""

    def __init__(
        self, routes: dict[str, Route], token: str, resolve: Resolver | None = None
    ) -> None:
        self.routes = routes
        self._resolve = resolve or self._by_first_segment
        self.token = token
        self.max_body = settings.max_request_bytes()
        self.timeout = settings.gateway_timeout()
        self.body_timeout = settings.gateway_body_timeout()
        self.guard = guard.ConnectionGuard(guard.Limits.from_settings())
        #: Ports that serve one endpoint at their root (its *origin*), by port: the
        #: endpoint's name as the gateway's own port routes it (its path prefix).
        self.origins: dict[int, str] = {}
        #: The server's own pages, by exact path (no app's endpoint has such a path:
        #: endpoints are ``/<app>/<function>/...``, and app names start with a letter
        #: or digit, so ``/_shoal/...`` is never one).
        self.pages: dict[str, Page] = {}
        #: Requests to endpoints by outcome and duration (``/metrics`` reports them).
        self.tally = HttpTally()
        #: The server's own app for every other path under ``/_shoal`` (its dashboard),
        #: which checks the token itself; None: such paths are 404.
        self.console: Callable[[dict[str, Any], Receive, Send], Awaitable[None]] | None = None
        #: Sandboxes' encrypted ports under ``/_shoal/tunnels/`` (None: such paths are 404).
        self.tunnels: Tunnels | None = None

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        server = scope.get("server")
        origin = self.origins.get(server[1]) if server else None
        path = scope["path"] if origin is None else f"/{origin}{scope['path']}"
        page = self.pages.get(path.rstrip("/")) if origin is None else None
        if page is not None and scope["type"] == "http":
            await self._page(page, scope, send)
            return
        if origin is None and path.startswith(TUNNELS + "/") and self.tunnels is not None:
            await self.tunnels(scope, receive, send, _bearer(scope))
            return
        if origin is None and (path == CONSOLE or path.startswith(CONSOLE + "/")):
            if self.console is None or scope["type"] != "http":
                await _reply(send, scope, 404, f"nothing at {scope['path']!r}")
            else:
                await self.console(scope, receive, send)
            return
        found = self._resolve(path)
        if found is None:
            await _reply(send, scope, 404, f"no web endpoint at {scope['path']!r}")
            return
        route, name, rest = found
        if route.requires_auth and not self._authorized(scope):
            await _reply(
                send, scope, 401, "this endpoint needs the token: Authorization: Bearer ..."
            )
            return
        inner: dict[str, Any] = {key: scope[key] for key in _SCOPE_KEYS if key in scope}
        inner["path"] = "/" + rest
        inner["raw_path"] = inner["path"].encode()
        inner["root_path"] = scope.get("root_path", "") + ("" if origin else "/" + name)
        if scope["type"] == "http":
            started, status = time.monotonic(), [500]

            async def sending(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                await send(message)

            try:
                await self._http(route, inner, receive, sending)
            finally:
                self.tally.add(name, scope["method"], status[0], time.monotonic() - started)
        else:
            await self._websocket(route, inner, receive, send)

    async def _page(self, page: Page, scope: dict[str, Any], send: Send) -> None:
        if not page.public and not page.authorize(_bearer(scope)):
            await _reply(
                send, scope, 401, "this page needs the server's token: Authorization: Bearer ..."
            )
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _reply(send, scope, 405, "only GET")
            return
        kind, body = page.render()
        headers = [(b"content-type", kind.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send(
            {"type": "http.response.body", "body": body if scope["method"] == "GET" else b""}
        )

    def _by_first_segment(self, path: str) -> tuple[Route, str, str] | None:
        name, _, rest = path.lstrip("/").partition("/")
        route = self.routes.get(name)
        return None if route is None else (route, name, rest)

    def _authorized(self, scope: dict[str, Any]) -> bool:
        for key, value in scope["headers"]:
            if key.lower() == b"authorization":
                expected = f"Bearer {self.token}".encode()
                return hmac.compare_digest(value, expected)
        return False

    def _declared_too_large(self, scope: dict[str, Any]) -> bool:
        for key, value in scope["headers"]:
            if key.lower() == b"content-length" and value.isdigit():
                return int(value) > self.max_body
        return False

    async def _http(
        self, route: Route, scope: dict[str, Any], receive: Receive, send: Send
    ) -> None:
        if self._declared_too_large(scope):
            await _reply(send, scope, 413, f"request body over {self.max_body} bytes")
            return
        try:
            async with asyncio.timeout(self.body_timeout):  # no task, unlike wait_for
                first = await receive()
        except TimeoutError:
            await _reply(send, scope, 408, f"no request body within {self.body_timeout:g} s")
            return
        if first["type"] == "http.disconnect":
            return
        body, more = first.get("body", b""), first.get("more_body", False)
        if len(body) > self.max_body:
            await _reply(send, scope, 413, f"request body over {self.max_body} bytes")
            return
        pool = route.pool()
        events: asyncio.Queue[Any] = asyncio.Queue()
        data = payload.dumps({"scope": scope, "body": body, "more_body": more}, "request")
        record = pool.submit(
            data, lambda _: events.put_nowait(_END), route.method, events.put_nowait
        )
        upload = _Upload(len(body))
        record.on_credit = upload.grant
        feeder = None
        if more:  # most requests carry their whole body in the first event
            feeder = asyncio.ensure_future(self._feed_body(pool, record, receive, upload))
        try:
            await self._relay_response(record, events, scope, send, pool.credit, upload)
        finally:
            if feeder is not None:
                feeder.cancel()
            if not record.done:
                pool.cancel(record)

    async def _feed_body(
        self, pool: WebPool, record: WebRecord, receive: Receive, upload: _Upload
    ) -> None:
        """Send the rest of the request body to the container, as far as it grants credit."""
        more = True
        while more:
            await upload.wait_for_credit()
            try:
                async with asyncio.timeout(self.body_timeout):
                    event = await receive()
            except TimeoutError:
                upload.problem = (408, f"the request body stalled for {self.body_timeout:g} s")
                pool.cancel(record)
                return
            if event["type"] == "http.request":
                upload.size += len(event.get("body", b""))
                if upload.size > self.max_body:
                    upload.problem = (413, f"request body over {self.max_body} bytes")
                    pool.cancel(record)
                    return
            upload.spend(cost(event))
            pool.feed(record, payload.dumps(event, "request event"))
            more = event["type"] == "http.request" and event.get("more_body", False)

    async def _relay_response(
        self,
        record: WebRecord,
        events: asyncio.Queue[Any],
        scope: dict[str, Any],
        send: Send,
        credit: Callable[[WebRecord, int], None],
        upload: _Upload,
    ) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                first = await events.get()
        except TimeoutError:
            await _reply(send, scope, 504, f"no response within {self.timeout:g} s")
            return
        if first is _END:
            await self._failed(record, scope, send, upload)
            return
        await send(payload.loads(first, "response event"))
        while (item := await events.get()) is not _END:
            event = payload.loads(item, "response event")
            await send(event)
            if event["type"] == "http.response.body":
                credit(record, cost(event))

    async def _failed(
        self, record: WebRecord, scope: dict[str, Any], send: Send, upload: _Upload
    ) -> None:
        """The input ended without starting a response: say why, with a status to match."""
        error = record.error
        if upload.problem is not None:
            status, detail = upload.problem
            await _reply(send, scope, status, detail)
            return
        if isinstance(error, ContainerCrashError):
            status = 502
        elif isinstance(error, FunctionTimeoutError):
            status = 504
        elif record.result is not None:  # it returned, having sent no response
            status, error = 500, RuntimeError("the app returned without a response")
        else:
            status = 500
        await _reply(send, scope, status, f"{type(error).__name__}: {error}")

    async def _websocket(
        self, route: Route, scope: dict[str, Any], receive: Receive, send: Send
    ) -> None:
        connect = await receive()  # the server's websocket.connect; the app gets its own
        assert connect["type"] == "websocket.connect"
        pool = route.pool()
        events: asyncio.Queue[Any] = asyncio.Queue()
        data = payload.dumps({"scope": scope}, "websocket")
        record = pool.submit(
            data, lambda _: events.put_nowait(_END), route.method, events.put_nowait
        )
        window = _Upload(0)
        record.on_credit = window.grant

        async def from_client() -> None:
            while True:
                # Read from the client only as far as the app has room: uvicorn stops
                # reading the socket meanwhile, so a flooding client is held by TCP.
                await window.wait_for_credit()
                message = await receive()
                window.spend(cost(message))
                pool.feed(record, payload.dumps(message, "websocket message"))
                if message["type"] == "websocket.disconnect":
                    return

        pump = asyncio.ensure_future(from_client())
        try:
            while (item := await events.get()) is not _END:
                event = payload.loads(item, "websocket event")
                await send(event)  # waits while the client's socket is backed up
                if event["type"] == "websocket.send":
                    pool.credit(record, cost(event))
        finally:
            pump.cancel()
            if not record.done:
                pool.cancel(record)


class _Upload:
    """What flows from the client to one running request: bytes so far, credit left,
    and why the gateway ended it, if it did (a status and a detail)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.problem: tuple[int, str] | None = None
        self._allowance = 0
        self._credit = asyncio.Event()

    def grant(self, amount: int) -> None:
        """The container's app took ``amount`` more bytes: that much more may follow."""
        self._allowance += amount
        if self._allowance > 0:
            self._credit.set()

    def spend(self, amount: int) -> None:
        self._allowance -= amount
        if self._allowance <= 0:
            self._credit.clear()

    async def wait_for_credit(self) -> None:
        await self._credit.wait()


def _bearer(scope: dict[str, Any]) -> str:
    """The request's bearer token ("" if none)."""
    for key, value in scope["headers"]:
        if key.lower() == b"authorization":
            text = value.decode("latin-1")
            return text[7:] if text.startswith("Bearer ") else ""
    return ""


async def _reply(send: Send, scope: dict[str, Any], status: int, detail: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008 if status == 401 else 1011})
        return
    body = json.dumps({"error": detail, "status": status}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class Served:
    """A running gateway: its address, token and endpoints; :meth:`stop` ends it."""

    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None], gateway: Gateway):
        self._server = server
        self._task = task
        self.gateway = gateway
        sockets = server.servers[0].sockets
        host, port = sockets[0].getsockname()[:2]
        self.host, self.port = host, port
        self.url = self._url_of(port)
        self.token = gateway.token
        self._origins: dict[str, asyncio.Server] = {}

    def url_for(self, name: str) -> str:
        """Endpoint ``name`` under the gateway's own port (a path prefix)."""
        return f"{self.url}/{name}"

    def origin_url(self, name: str) -> str | None:
        """Endpoint ``name`` at the root of its own port, if it has one."""
        listener = self._origins.get(name)
        return None if listener is None else self._url_of(_port(listener))

    async def open_origin(self, name: str, port: int = 0) -> str:
        """Serve endpoint ``name`` (as :meth:`url_for` names it) also at the root of a
        port of its own, on the gateway's host, with the same TLS, token and limits:
        an app that writes absolute paths (``/result``, ``<form action="/go">``) works
        there as it would on a host of its own. Port 0 takes a free one. Returns the URL.

        Raises:
            OSError: the port cannot be bound.
        """
        if name in self._origins:
            return self.origin_url(name) or ""
        server, config = self._server, self._server.config
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.Protocol:
            made: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                config=config,
                server_state=server.server_state,
                app_state=server.lifespan.state,
                _loop=loop,
            )
            return made

        listener = await loop.create_server(
            protocol, self.host, port, ssl=config.ssl, backlog=config.backlog
        )
        server.servers.append(listener)  # uvicorn closes it, and drains it, at shutdown
        self._origins[name] = listener
        self.gateway.origins[_port(listener)] = name
        return self._url_of(_port(listener))

    def close_origin(self, name: str) -> None:
        """Stop serving endpoint ``name`` at its own port (requests under way finish)."""
        listener = self._origins.pop(name, None)
        if listener is None:
            return
        self.gateway.origins.pop(_port(listener), None)
        listener.close()
        if listener in self._server.servers:
            self._server.servers.remove(listener)

    def listing(self) -> list[str]:
        """One line per endpoint: its origin, and its path under the gateway's port."""
        lines = []
        for name in self.gateway.routes:
            origin = self.origin_url(name)
            also = f" (also {self.url_for(name)})" if origin else ""
            lines.append(f"  {name}: {origin or self.url_for(name)}{also}")
        return lines

    @property
    def origins(self) -> list[str]:
        """The endpoints that have a port of their own."""
        return list(self._origins)

    def origin_ports(self) -> set[int]:
        """The ports endpoints are served on at their root."""
        return {_port(listener) for listener in self._origins.values()}

    def _url_of(self, port: int) -> str:
        scheme = "https" if self._server.config.ssl else "http"
        return f"{scheme}://{self.host}:{port}"

    async def stop(self) -> None:
        self._server.should_exit = True
        await self._task


def _port(listener: asyncio.Server) -> int:
    """The port ``listener`` listens on."""
    port: int = listener.sockets[0].getsockname()[1]
    return port


async def start(
    routes: dict[str, Route],
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    resolve: Resolver | None = None,
    tls: tuple[str, str] | None = None,
) -> Served:
    """Serve ``routes`` (or what ``resolve`` finds) with uvicorn on the running loop;
    return once it accepts connections. ``tls`` (certificate and key files) serves HTTPS.

    Raises:
        OSError: the address cannot be bound.
    """
    gateway = Gateway(
        routes, token or settings.gateway_token() or secrets.token_urlsafe(24), resolve
    )
    http, ws = guard.protocols(gateway.guard)
    config = uvicorn.Config(
        gateway,
        host=host,
        port=port,
        log_level="warning",
        # Its own format, unless the server's log is JSON (then configured by shoal.log).
        log_config=None if log.structured() else uvicorn.config.LOGGING_CONFIG,
        lifespan="off",
        http=http,
        ws=ws,
        # A compressed frame can inflate a thousandfold past every window: unauthenticated
        # clients get no permessage-deflate.
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=2,
        ssl_certfile=tls[0] if tls else None,
        ssl_keyfile=tls[1] if tls else None,
    )
    loop = asyncio.get_running_loop()
    if not isinstance(loop.get_exception_handler(), guard.RateLimitedLog):
        loop.set_exception_handler(guard.RateLimitedLog())
    server = uvicorn.Server(config)

    async def serve() -> None:
        try:
            await server.serve()
        except SystemExit:  # uvicorn exits when it cannot bind; it has logged why
            raise OSError(f"the gateway could not listen on {host}:{port}") from None

    task = asyncio.ensure_future(serve())
    while not server.started:
        if task.done():
            task.result()  # the server failed to start: raise why
            raise OSError(f"the gateway could not listen on {host}:{port}")
        await asyncio.sleep(0.01)
    return Served(server, task, gateway)
