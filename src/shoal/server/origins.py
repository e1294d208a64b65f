"""Each web endpoint of a running app at the root of a port of its own.

The gateway serves every endpoint under ``/<app>/<function>/``. Web apps often
write absolute paths (a redirect to ``/result``, ``<form action="/go">``), which
leave that prefix, so each endpoint is also served at the root of a port of its
own, as Modal serves each at a host of its own; ``get_web_url()`` names that
origin. A deployed endpoint keeps its port across redeploys and restarts (the
store remembers it; if another process took it meanwhile, the endpoint gets a
new one and says so in the log). An ephemeral app's endpoints get free ports
that close when the app ends.
"""

from __future__ import annotations

import asyncio
from typing import Final

from shoal.gateway.server import Served
from shoal.server.apps import Apps
from shoal.server.store import Store

#: Seconds between looks for apps that ended on their own (a drained ephemeral app).
_SWEEP_EVERY: Final = 2.0


class WebOrigins:
    """Keeps one port per web endpoint of every running app (see the module docstring)."""

    def __init__(self, served: Served, store: Store, apps: Apps) -> None:
        self._served = served
        self._store = store
        self._apps = apps
        self._sweep: asyncio.TimerHandle | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Look for ended apps from time to time (call :meth:`sync` after each change)."""
        loop = asyncio.get_running_loop()

        def sweep() -> None:
            task = loop.create_task(self.sync())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            self._sweep = loop.call_later(_SWEEP_EVERY, sweep)

        self._sweep = loop.call_later(_SWEEP_EVERY, sweep)

    def stop(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
        for task in self._tasks:
            task.cancel()

    def url(self, app: str, function: str) -> str | None:
        """The origin of ``app``'s endpoint ``function``, while it has one."""
        return self._served.origin_url(f"{app}/{function}")

    async def sync(self) -> None:
        """Open a port for every web endpoint of a running app that has none; close the
        ports of endpoints whose app ended, and forget those of stopped deployments."""
        async with self._lock:
            wanted = self._wanted()
            for endpoint in self._served.origins:
                if endpoint not in wanted:
                    self._served.close_origin(endpoint)
            stored = self._forget_stale(wanted)
            for endpoint, deployed in wanted.items():
                if endpoint not in self._served.origins:
                    await self._open(endpoint, stored.get(endpoint, 0) if deployed else 0, deployed)

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
