"""The server's web dashboard, at ``http://HOST:HTTP_PORT/_shoal/``.

An ASGI app the gateway hands every request under ``/_shoal/`` (a prefix no app name
can take). Everything but the static files and the login form needs the server's
token: as ``Authorization: Bearer``, or as the session cookie the login form sets
(HttpOnly, SameSite=Strict, Secure on a TLS server; it holds a random session id,
never the token).

- ``GET /_shoal/``: the page (one HTML file and its script; uPlot draws the plots),
  or the login form.
- ``POST /_shoal/login`` (form field ``token``), ``POST /_shoal/logout``.
- ``GET /_shoal/api/apps``: apps, their versions, states and functions.
- ``GET /_shoal/api/function?key=K``: a pool's settings, containers (state, node,
  inputs run, uptime, CPU, memory), history (a point a second for 15 minutes),
  scaling markers, recent failures with tracebacks, and its web URL.
- ``GET /_shoal/api/container?id=ID``: the tail of a container's log lines.
- ``GET /_shoal/api/simulate?key=K&max_inputs=8&...``: a what-if of K's recorded
  traffic under those settings (``shoal simulate``), with containers over time.
- ``GET /_shoal/stream?key=K``: server-sent events, one a second, with each
  function's new point (only ``K``'s, given a key): aggregates, never an event per
  input (see :mod:`shoal.server.timeline`).
- ``GET /_shoal/stream/logs?id=ID``: a container's new log lines as they come.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, Final, Protocol

from shoal.control.pool import Pool
from shoal.exception import Error, InvalidError
from shoal.server.logs import Logs
from shoal.server.metrics import labels_of
from shoal.server.simulator import SETTINGS
from shoal.server.timeline import Timeline

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

PREFIX: Final = "/_shoal"
#: The session cookie's name, and how long a login lasts.
COOKIE: Final = "shoal_session"
SESSION_SECONDS: Final = 12 * 3600
#: Log lines a container's view starts with.
LOG_TAIL: Final = 500
#: The files under ``static/`` the page loads, and their types.
STATIC: Final = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
    "uPlot.LICENSE": "text/plain; charset=utf-8",
}
_LOGIN_BODY_MAX: Final = 4096


class Source(Protocol):
    """What the dashboard reads from the server."""

    logs: Logs

    def authorize(self, token: object) -> bool: ...

    def app_rows(self) -> list[dict[str, Any]]: ...

    def pool_of(self, key: str) -> tuple[Pool, str | None] | None: ...

    async def simulate(self, app: str, function: str, runs: Any, since: Any = 0) -> Any: ...


class Dashboard:
    """The ASGI app for ``/_shoal/...`` (see the module docstring)."""

    def __init__(self, source: Source, timeline: Timeline, secure: bool = False) -> None:
        self._source = source
        self._timeline = timeline
        self._secure = secure
        self._sessions: dict[str, float] = {}  # session id -> when it expires
        self._closing = asyncio.Event()

    def close(self) -> None:
        """End every open stream (the server is stopping)."""
        self._closing.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"].removeprefix(PREFIX).rstrip("/") or "/"
        method = scope["method"]
        if path.startswith("/static/"):
            await self._static(scope, send, path.removeprefix("/static/"))
            return
        if path == "/login" and method == "POST":
            await self._login(scope, receive, send)
            return
        authorized = self._authorized(scope)
        if path == "/":
            page = "dashboard.html" if authorized else "login.html"
            await _send(send, 200, "text/html; charset=utf-8", _static_file(page))
            return
        if not authorized:
            await _json(send, {"error": "this page needs the server's token"}, 401)
            return
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(scope["query_string"].decode()).items()}
        if path == "/logout" and method == "POST":
            self._sessions.pop(_cookie(scope), None)
            expired = f"{COOKIE}=; Path={PREFIX}; Max-Age=0; HttpOnly; SameSite=Strict"
            await _send(
                send, 303, "text/plain", b"", [("location", PREFIX + "/"), ("set-cookie", expired)]
            )
            return
        if method != "GET":
            await _json(send, {"error": "only GET"}, 405)
            return
        await self._get(path, query, receive, send)

    async def _get(self, path: str, query: dict[str, str], receive: Receive, send: Send) -> None:
        """Answer an authorized GET of ``path`` (see the module docstring)."""
        if path == "/api/apps":
            await _json(send, self._source.app_rows())
        elif path == "/api/function":
            await self._function(send, query.get("key", ""))
        elif path == "/api/simulate":
            await self._simulate(send, query)
        elif path == "/api/container":
            await _json(send, self._log_tail(query.get("id", ""), "")[0])
        elif path == "/stream":
            await self._stream(receive, send, query.get("key"))
        elif path == "/stream/logs":
            await self._follow(receive, send, query.get("id", ""))
        else:
            await _json(send, {"error": f"no page {PREFIX + path!r}"}, 404)

    # -- who may look --------------------------------------------------------

    def _authorized(self, scope: Scope) -> bool:
        for key, value in scope["headers"]:
            if key == b"authorization" and value.startswith(b"Bearer "):
                return self._source.authorize(value[7:].decode("latin-1"))
        session = _cookie(scope)
        expires = self._sessions.get(session) if session else None
        if expires is None:
            return False
        if expires < time.time():
            del self._sessions[session]
            return False
        return True

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _body(receive, _LOGIN_BODY_MAX)
        fields = urllib.parse.parse_qs(body.decode("utf-8", "replace")) if body else {}
        token = (fields.get("token") or [""])[0].strip()
        if body is None or not self._source.authorize(token):
            page = _static_file("login.html").replace(
                b"<!--error-->", b'<p class="error">That is not the server\'s token.</p>'
            )
            await _send(send, 401, "text/html; charset=utf-8", page)
            return
        now = time.time()
        self._sessions = {s: t for s, t in self._sessions.items() if t > now}
        session = secrets.token_urlsafe(32)
        self._sessions[session] = now + SESSION_SECONDS
        cookie = (
            f"{COOKIE}={session}; Path={PREFIX}; Max-Age={SESSION_SECONDS}; HttpOnly; "
            "SameSite=Strict" + ("; Secure" if self._secure else "")
        )
        await _send(
            send, 303, "text/plain", b"", [("location", PREFIX + "/"), ("set-cookie", cookie)]
        )

    # -- what it shows ----------------------------------------------------------

    async def _static(self, scope: Scope, send: Send, name: str) -> None:
        kind = STATIC.get(name)
        if kind is None:
            await _send(send, 404, "text/plain", b"no such file")
            return
        await _send(send, 200, kind, _static_file(name), [("cache-control", "max-age=3600")])

    async def _function(self, send: Send, key: str) -> None:
        found = self._source.pool_of(key)
        if found is None:
            await _json(send, {"error": f"no running function {key!r}"}, 404)
            return
        pool, web_url = found
        spec = pool.spec
        await _json(
            send,
            {
                "key": key,
                "name": spec.name,
                "scaling": _scaling(pool),
                "timeout": spec.timeout,
                "resources": {"cpu": spec.resources.cpu, "memory": spec.resources.memory},
                "web_url": web_url,
                "stats": _stats(pool),
                "containers": self._timeline.containers(pool),
                **self._timeline.history(key),
            },
        )

    async def _simulate(self, send: Send, query: dict[str, str]) -> None:
        """A what-if of the function ``key``: its recorded traffic replayed with the
        settings given as query parameters (see server/simulator.py)."""
        app, function = labels_of(query.pop("key", ""))
        changes: dict[str, Any] = {}
        try:
            for name, value in query.items():
                if name not in SETTINGS:
                    raise InvalidError(f"cannot simulate {name!r}")
                if value.strip().lower() in ("", "none"):
                    changes[name] = None
                else:
                    changes[name] = float(value) if name == "scaledown_window" else int(value)
            answer = await self._source.simulate(app, function, [changes])
        except (Error, ValueError) as exc:
            await _json(send, {"error": str(exc)}, 400)
            return
        await _json(send, answer)

    def _log_tail(self, container_id: str, cursor: str) -> tuple[dict[str, Any], str]:
        """The last lines of ``container_id`` after ``cursor``, and the cursor to go on
        from."""
        app = container_id.split(".v", 1)[0]
        kept = self._source.logs.after(app, cursor) if self._source.logs.has(app) else None
        if kept is None:
            return {"id": container_id, "lines": []}, cursor
        lines = [
            {"time": row["time"], "stream": row["stream"], "text": row["text"]}
            for row in kept["lines"]
            if row["container"] == container_id
        ]
        return {"id": container_id, "lines": lines[-LOG_TAIL:]}, kept["cursor"]

    async def _stream(self, receive: Receive, send: Send, key: str | None) -> None:
        """A point a second, for every function or for ``key``'s, until the page goes."""
        ticks: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue(maxsize=30)

        def hear(now: float, points: dict[str, dict[str, Any]]) -> None:
            chosen = points if key is None else {k: p for k, p in points.items() if k == key}
            with contextlib.suppress(asyncio.QueueFull):  # a stalled reader misses points
                ticks.put_nowait((now, chosen))

        stop = self._timeline.listen(hear)
        try:
            await _events(
                receive, send, ticks, lambda item: {"t": item[0], "points": item[1]}, self._closing
            )
        finally:
            stop()

    async def _follow(self, receive: Receive, send: Send, container_id: str) -> None:
        """A container's new log lines, checked twice a second, until the page goes."""
        lines: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue(maxsize=30)
        _, cursor = self._log_tail(container_id, "")

        async def poll() -> None:
            nonlocal cursor
            while True:
                await asyncio.sleep(0.5)
                found, cursor = self._log_tail(container_id, cursor)
                if found["lines"]:
                    with contextlib.suppress(asyncio.QueueFull):
                        lines.put_nowait(found["lines"])

        poller = asyncio.ensure_future(poll())
        try:
            await _events(receive, send, lines, lambda rows: {"lines": rows}, self._closing)
        finally:
            poller.cancel()


async def _events(
    receive: Receive,
    send: Send,
    queue: asyncio.Queue[Any],
    shape: Callable[[Any], dict[str, Any]],
    closing: asyncio.Event,
) -> None:
    """Send each item of ``queue`` as a server-sent event (``shape`` makes its JSON)
    until the client disconnects or ``closing`` is set; a comment every 15 s keeps
    proxies from closing it."""
    headers = [
        (b"content-type", b"text/event-stream"),
        (b"cache-control", b"no-store"),
        (b"x-accel-buffering", b"no"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b": open\n\n", "more_body": True})
    gone = asyncio.ensure_future(_disconnected(receive))
    ended = asyncio.ensure_future(closing.wait())
    gone.add_done_callback(lambda _: ended.cancel())
    ended.add_done_callback(lambda _: gone.cancel())
    try:
        while not gone.done():
            item = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait(
                {item, gone}, timeout=15, return_when=asyncio.FIRST_COMPLETED
            )
            if item in done:
                data = json.dumps(shape(item.result()), separators=(",", ":"))
                chunk = f"data: {data}\n\n".encode()
            else:
                item.cancel()
                chunk = b": keep-alive\n\n"
            if gone.done():
                break
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except OSError:
        pass  # the connection went while writing
    finally:
        gone.cancel()
        ended.cancel()
    with contextlib.suppress(Exception):
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _body(receive: Receive, limit: int) -> bytes | None:
    """The request's body, or None when it is longer than ``limit`` bytes."""
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if len(body) > limit:
            return None
        if not message.get("more_body"):
            return body


def _cookie(scope: Scope) -> str:
    for key, value in scope["headers"]:
        if key == b"cookie":
            for part in bytes(value).decode("latin-1").split(";"):
                name, _, content = part.strip().partition("=")
                if name == COOKIE and content:
                    return str(content)
    return ""


def _scaling(pool: Pool) -> dict[str, Any]:
    scaling = pool.spec.scaling
    return {
        "max_inputs": scaling.max_inputs,
        "target_inputs": scaling.target_inputs,  # None: max_inputs
        "min_containers": scaling.min_containers,
        "max_containers": scaling.max_containers,
        "buffer_containers": scaling.buffer_containers,
        "scaledown_window": scaling.scaledown_window,
    }


def _stats(pool: Pool) -> dict[str, Any]:
    stats = pool.stats()
    return {
        "queued": stats.queued,
        "running": stats.running,
        "containers": stats.containers,
        "containers_started": stats.containers_started,
        "awaiting_room": stats.awaiting_room,
        "waiting_for": stats.waiting_for,
    }


def _static_file(name: str) -> bytes:
    return (resources.files("shoal.server") / "static" / name).read_bytes()


async def _send(
    send: Send, status: int, kind: str, body: bytes, extra: list[tuple[str, str]] | None = None
) -> None:
    headers = [
        (b"content-type", kind.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"content-security-policy", _CSP),
        *((k.encode(), v.encode()) for k, v in extra or ()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, body: Any, status: int = 200) -> None:
    await _send(send, status, "application/json", json.dumps(body).encode())


#: The page runs only its own files: no inline script, nothing from elsewhere.
_CSP: Final = b"default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:"
