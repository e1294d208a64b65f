"""Serving a running app's web endpoints from the caller's process (``shoal serve``,
and ``shoal run`` while the entrypoint runs): the gateway of :mod:`shoal.gateway`
routed to the app's own pools."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import click

from shoal import settings
from shoal.bridge import run_sync
from shoal.client.web import web_spec
from shoal.gateway.server import Route, Served, start
from shoal.protocol import transport
from shoal.spec.function import endpoint_name

if TYPE_CHECKING:
    from shoal.client.app import App

#: ``--dashboard``'s help (shoal run, shoal serve).
DASHBOARD_HELP = (
    "Serve this run's dashboard (and /metrics) on 127.0.0.1 while it runs; print its URL "
    "and login token."
)


def web_routes(app: App, *, all_need_auth: bool = False) -> dict[str, Route]:
    """The app's web endpoints by URL name: functions by name, a class's web methods as
    ``Cls.method`` (served by the pool of its default parameters)."""
    routes = {}
    for name, function in app.registered_functions.items():
        spec = web_spec(function.__shoal_raw_function__)
        if spec is not None:
            routes[name] = Route(function._pool, spec["requires_auth"] or all_need_auth)
    for name, cls in app.registered_classes.items():
        for method, spec in cls.web_methods.items():
            needs = spec["requires_auth"] or all_need_auth
            pool = getattr(cls(), method)._pool if method else cls()._pool
            routes[endpoint_name(name, method)] = Route(pool, needs, method)
    return routes


@contextlib.contextmanager
def serving(
    app: App, host: str = "127.0.0.1", port: int = 0, token: str | None = None
) -> Iterator[Served | None]:
    """Serve the running ``app``'s web endpoints for the ``with`` block (``None`` if it has
    none). Off loopback every endpoint requires the token."""
    routes = web_routes(app, all_need_auth=not transport.is_loopback(host))
    if not routes:
        yield None
        return
    served = run_sync(start(routes, host, port, token))
    try:
        # Each endpoint also at the root of a port of its own, as on Modal: the ports
        # after the gateway's when it has a fixed one (so `shoal serve --port 8000` keeps
        # them across reloads), else free ones.
        for index, name in enumerate(sorted(routes)):
            origin = port + 1 + index if port else 0
            try:
                run_sync(served.open_origin(name, origin))
            except OSError:
                run_sync(served.open_origin(name, 0))
        app.served = served
        yield served
    finally:
        app.served = None
        run_sync(served.stop())


def open_dashboard(app: App, port: int = 0) -> tuple[str, str] | None:
    """Serve the dashboard of the embedded server ``app`` runs on (in this process) on
    127.0.0.1:``port`` (0: a free port) until it stops; return its URL and the token
    that logs in to it (SHOAL_GATEWAY_TOKEN when set, else a new one). None when ``app``
    runs on a server, which serves its own dashboard on its HTTP port.

    Raises:
        OSError: the port cannot be bound.
    """
    from shoal.server import embedded

    server = embedded.running() if app.runs_on_server is None else None
    if server is None:
        return None
    return run_sync(server.open_console("127.0.0.1", port, settings.gateway_token()))


def announce_dashboard(app: App, port: int, say: Callable[[str], object]) -> None:
    """Serve the running app's dashboard (see :func:`serving.open_dashboard`) and say
    where, and with which token.

    Raises:
        click.ClickException: the port is taken.
    """
    try:
        opened = open_dashboard(app, port)
    except OSError as exc:
        raise click.ClickException(f"cannot serve the dashboard on port {port}: {exc}") from None
    if opened is None:
        say("the server serves the dashboard at /_shoal/ on its HTTP port")
        return
    url, token = opened
    say(f"dashboard on {url} (token: {token})")
