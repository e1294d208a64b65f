"""Each web endpoint of a running app at the root of a port of its own.

The gateway serves every endpoint under ``/<app>/<function>/``. Web apps often
write absolute paths (a redirect to ``/result``, ``<form action="/go">``), which
leave that prefix, so each endpoint is also served at the root of a port of its
own, as Modal serves each at a host of its own; ``get_web_url()`` names that
origin. A deployed endpoint keeps its port across redeploys and restarts (the
store remembers it; if another process took it meanwhile, the endpoint gets a
new one and says so in the log). An ephemeral app's endpoints get free ports
that close when the app ends (``Apps.on_change``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from shoal.server.apps import Apps
from shoal.server.store import Store

if TYPE_CHECKING:
    from shoal.gateway.server import Served


class WebOrigins:
    """Keeps one port per web endpoint of every running app (see the module docstring)."""

    def __init__(self, served: Served, store: Store, apps: Apps) -> None:
        self._served = served
        self._store = store
        self._apps = apps
        self._lock = asyncio.Lock()

    def url(self, app: str, function: str) -> str | None:
        """The origin of ``app``'s endpoint ``function``, while it has one."""
        return self._served.origin_url(f"{app}/{function}")

    async def sync(self) -> None:
        """Open a port for every web endpoint of a running app that has none (after a
        deploy, an ephemeral run, a restart), and prune the rest."""
        async with self._lock:
            stored = self.prune()
            for endpoint, deployed in self._wanted().items():
                if endpoint not in self._served.origins:
                    await self._open(endpoint, stored.get(endpoint, 0) if deployed else 0, deployed)
            self.prune()  # an app that ended while ports were being opened

    def prune(self) -> dict[str, int]:
        """Close the ports of endpoints whose app ended or is draining, and forget those
        of stopped deployments (``Apps.on_change`` calls it at once); return the ports
        still stored."""
        wanted = self._wanted()
        for endpoint in self._served.origins:
            if endpoint not in wanted:
                self._served.close_origin(endpoint)
        return self._forget_stale(wanted)

    def _wanted(self) -> dict[str, bool]:
        """Every endpoint of a running app, and whether it is deployed (keeps its port)."""
        wanted = {}
        for deployment in self._apps.running():
            for name in deployment.web_functions():
                wanted[f"{deployment.app}/{name}"] = True
        for deployment in self._apps.ephemeral_apps():
            for name in [] if deployment.draining else deployment.web_functions():
                wanted[f"{deployment.app}/{name}"] = False
        return wanted

    def _forget_stale(self, wanted: dict[str, bool]) -> dict[str, int]:
        """Forget the stored ports of endpoints gone from a running app or of apps no
        longer deployed (an app deployed but not running keeps them); return the rest."""
        running = {deployment.app for deployment in self._apps.running()}
        deployed = {row.name for row in self._store.apps() if row.state == "deployed"}
        stored = self._store.web_ports()
        for endpoint in list(stored):
            app = endpoint.partition("/")[0]
            if endpoint not in wanted and (app in running or app not in deployed):
                self._store.forget_web_port(endpoint)
                del stored[endpoint]
        return stored

    async def _open(self, endpoint: str, port: int, deployed: bool) -> None:
        try:
            url = await self._served.open_origin(endpoint, port)
        except OSError as exc:
            print(f"web endpoint {endpoint}: port {port} is taken ({exc}); using another")
            url = await self._served.open_origin(endpoint, 0)
        if deployed:
            self._store.set_web_port(endpoint, int(url.rsplit(":", 1)[1]))
