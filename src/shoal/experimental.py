"""``shoal.experimental``: the names of ``modal.experimental`` that mean something here.

``import shoal.experimental as experimental`` (or ``modal.experimental`` after
``import shoal as modal``) gives:

- :func:`http_server`: a class whose ``@shoal.enter()`` starts an HTTP server on a port
  is served through the gateway, each request proxied to that port in one of the class's
  containers, one port per endpoint as for any other (Modal's Flash classes);
- :func:`list_deployed_apps`, :func:`stop_app`, :func:`get_app_objects`: the server's
  apps, as ``shoal app list|stop`` and the lookups see them;
- :func:`get_local_input_concurrency`: inside a container, how many inputs it runs at once.

Modal's other experimental names (clusters, fabric peers, Flash routing, image deletion,
changing a container's concurrency from inside it) have no meaning on Shoal: calling one
raises :class:`~shoal.exception.InvalidError` naming it, so a script fails where it uses
it instead of running differently.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from shoal import context
from shoal.bridge import run_sync
from shoal.client.cls import Cls
from shoal.client.connection import connect
from shoal.client.function import Function
from shoal.exception import ExecutionError, InvalidError
from shoal.protocol import markers

T = TypeVar("T", bound=type)


def http_server(
    port: int | None = None,
    *,
    proxy_regions: Sequence[str] = (),
    startup_timeout: float = 30,
    exit_grace_period: float | None = None,
    h2_enabled: bool = False,
) -> Callable[[T], T]:
    """Serve the decorated ``@app.cls`` class's HTTP server (started by its
    ``@shoal.enter()`` on ``port``) through the gateway::

        @app.cls()
        @shoal.experimental.http_server(8000)
        class Server:
            @shoal.enter()
            def start(self):
                self.proc = subprocess.Popen(["python", "-m", "http.server", "8000"])

    Requests wait until something accepts connections on ``port`` (at most
    ``startup_timeout`` seconds after the container starts). ``Server.get_web_url()``
    names the endpoint. ``proxy_regions`` and ``h2_enabled`` choose Modal's proxies and
    protocol; they mean nothing here and are ignored, with a warning. The class's
    containers stop within ``SHOAL_SHUTDOWN_GRACE``, so ``exit_grace_period`` is not used.

    Raises:
        InvalidError: no port (``@http_server`` without parentheses), a port out of
            range, or applied to something other than a class.
    """
    if port is None or not isinstance(port, int) or isinstance(port, bool):
        raise InvalidError(
            "http_server needs a port: @shoal.experimental.http_server(8000) (did you forget "
            "the parentheses?)"
        )
    if not 0 < port < 65536:
        raise InvalidError(f"port={port!r}: must be 1..65535")
    ignored = [
        name
        for name, given in (("proxy_regions", proxy_regions), ("h2_enabled", h2_enabled))
        if given
    ]
    if ignored:
        warnings.warn(
            f"http_server: {', '.join(ignored)} choose Modal's proxies and mean nothing on "
            "Shoal; ignored",
            UserWarning,
            stacklevel=2,
        )
    spec = {
        "kind": "web_server",
        "port": port,
        "startup_timeout": float(startup_timeout),
        "requires_auth": False,
    }

    def decorate(cls: T) -> T:
        if not isinstance(cls, type):
            raise InvalidError(
                f"@shoal.experimental.http_server decorates a class (below @app.cls), not {cls!r}"
            )
        setattr(cls, markers.WEB, spec)
        return cls

    return decorate


@dataclass(frozen=True)
class AppInfo:
    """A deployed app, as :func:`list_deployed_apps` lists it."""

    app_id: str
    name: str
    containers: int


def _ask(op: str, **body: Any) -> Any:
    async def ask() -> Any:
        connection = await connect()
        return await connection.request(op, **body)

    return run_sync(ask())


def list_deployed_apps(environment_name: str = "", **_: Any) -> list[AppInfo]:
    """The deployed apps of the server this process uses, with their running containers.

    Raises:
        ConnectionError: no server to ask.
    """
    rows = _ask("app_list")
    return [
        AppInfo(row["id"], row["name"], int(row["containers"]))
        for row in rows
        if row["state"] == "deployed"
    ]


def stop_app(name: str, **_: Any) -> None:
    """Stop deployed app ``name`` (``shoal app stop``).

    Raises:
        NotFoundError: no such app.
        ConnectionError: no server to ask.
    """
    _ask("app_stop", app=name)


def get_app_objects(app_name: str, **_: Any) -> dict[str, Function[..., Any] | Any]:
    """The functions and classes of deployed app ``app_name``, by name, as handles
    (``Function.from_name`` / ``Cls.from_name``).

    Raises:
        NotFoundError: no such app.
        ConnectionError: no server to ask.
    """
    rows = [row for row in _ask("app_list") if row["name"] == app_name]
    if not rows or rows[0]["state"] != "deployed":
        from shoal.exception import NotFoundError

        raise NotFoundError(f"no deployed app {app_name!r}")
    found: dict[str, Any] = {}
    for name in rows[0]["functions"]:
        info = _ask("lookup", app=app_name, function=name)
        if info.get("kind") == "class":
            found[name] = Cls.from_name(app_name, name)
        else:
            found[name] = Function.from_name(app_name, name)
    return found


def get_local_input_concurrency() -> int:
    """Inside a container: how many inputs it may run at once (its ``max_inputs``).

    Raises:
        ExecutionError: called outside a container.
    """
    found = context.input_concurrency()
    if found is None:
        raise ExecutionError("get_local_input_concurrency() is for code inside a container")
    return found


def _without_meaning(name: str, why: str) -> Callable[..., Any]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise InvalidError(f"shoal.experimental.{name} has no meaning on Shoal: {why}")

    refuse.__name__ = name
    refuse.__doc__ = f"Modal's ``{name}``; on Shoal it raises InvalidError ({why})."
    return refuse


_CLUSTERS = "Shoal runs no multi-node clusters of one input"
clustered = _without_meaning("clustered", _CLUSTERS)
get_cluster_info = _without_meaning("get_cluster_info", _CLUSTERS)
get_fabric_peers = _without_meaning("get_fabric_peers", _CLUSTERS)
flash_forward = _without_meaning("flash_forward", "the gateway routes every request itself")
flash_get_containers = _without_meaning(
    "flash_get_containers", "use `shoal container list` or f.stats()"
)
flash_prometheus_autoscaler = _without_meaning(
    "flash_prometheus_autoscaler", "the autoscaler sizes pools from their own queues"
)
image_delete = _without_meaning(
    "image_delete", "images are cached by digest under SHOAL_IMAGE_CACHE; delete the folder"
)
stop_fetching_inputs = _without_meaning(
    "stop_fetching_inputs", "stop a container with `shoal container stop ID` instead"
)
set_local_input_concurrency = _without_meaning(
    "set_local_input_concurrency", "a container's capacity is its function's max_inputs"
)
get_app_lifecycle = _without_meaning(
    "get_app_lifecycle", "`shoal app history NAME` lists an app's versions"
)

__all__ = [
    "AppInfo",
    "clustered",
    "flash_forward",
    "flash_get_containers",
    "flash_prometheus_autoscaler",
    "get_app_lifecycle",
    "get_app_objects",
    "get_cluster_info",
    "get_fabric_peers",
    "get_local_input_concurrency",
    "http_server",
    "image_delete",
    "list_deployed_apps",
    "set_local_input_concurrency",
    "stop_app",
    "stop_fetching_inputs",
]
