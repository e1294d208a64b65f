"""Each web endpoint of a running app at the root of a port of its own.

The gateway serves every endpoint under ``/<app>/<function>/``. Web apps often
write absolute paths (a redirect to ``/result``, ``<form action="/go">``), which
leave that prefix, so each endpoint is also served at the root of a port of its
own, as Modal serves each at a host of its own; ``get_web_url()`` names that
origin. A deployed endpoint keeps its port across redeploys, restarts and an
``app stop`` followed by a deploy (the store remembers it until the endpoint leaves a
running version; if another process took it meanwhile, the endpoint gets a new one
and says so in the log). An ephemeral app's endpoints get ports that close when the
app ends (``Apps.on_change``). With a range of ports (``shoal server
--origin-ports 41100-41199``) every origin takes one from it, the lowest that no
stored endpoint holds; with none left, an endpoint has only its path URL, and the
log says so.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

from shoal import log
from shoal.server.apps import Apps
from shoal.server.store import Store

if TYPE_CHECKING:
    from shoal.gateway.server import Served


class WebOrigins:
    """Keeps one port per web endpoint of every running app (see the module docstring)."""

    def __init__(
        self, served: Served, store: Store, apps: Apps, ports: range | None = None
    ) -> None:
        self._served = served
        self._store = store
        self._apps = apps
        #: The ports origins may take (None: any free one).
        self._ports = ports
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
        """Forget the stored ports of endpoints gone from a running app, or whose app the
        store no longer knows (a stopped app keeps them for its next deploy); return the
        rest."""
        running = {deployment.app for deployment in self._apps.running()}
        known = {row.name for row in self._store.apps()}
        stored = self._store.web_ports()
        for endpoint in list(stored):
            app = endpoint.partition("/")[0]
            if endpoint not in wanted and (app in running or app not in known):
                self._store.forget_web_port(endpoint)
                del stored[endpoint]
        return stored

    async def _open(self, endpoint: str, port: int, deployed: bool) -> None:
        if port:
            try:
                url = await self._served.open_origin(endpoint, port)
            except OSError as exc:
                log.say(
                    f"web endpoint {endpoint}: port {port} is taken ({exc}); using another",
                    component="gateway",
                    level="warning",
                    stream=sys.stdout,
                )
            else:
                self._keep(endpoint, url, deployed)
                return
        free = await self._open_free(endpoint)
        if free is not None:
            self._keep(endpoint, free, deployed)

    async def _open_free(self, endpoint: str) -> str | None:
        """Open a port for ``endpoint``: any free one, or the lowest free one of the range
        that no stored endpoint holds (None when none is left)."""
        if self._ports is None:
            return await self._served.open_origin(endpoint, 0)
        held = {*self._store.web_ports().values(), *self._served.origin_ports()}
        for port in self._ports:
            if port in held:
                continue
            try:
                return await self._served.open_origin(endpoint, port)
            except OSError:
                continue  # another process holds it
        first, last = self._ports.start, self._ports.stop - 1
        log.say(
            f"web endpoint {endpoint}: no free port left in --origin-ports {first}-{last}; "
            "it is served at its path URL only",
            component="gateway",
            level="warning",
            stream=sys.stdout,
        )
        return None

    def _keep(self, endpoint: str, url: str, deployed: bool) -> None:
        if deployed:
            self._store.set_web_port(endpoint, int(url.rsplit(":", 1)[1]))
