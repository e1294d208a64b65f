"""Handles on a deployed app's functions and classes, found by name on a server.

``shoal.Function.from_name("app", "f")`` asks the server (``lookup``) what ``f``
is, and returns a :class:`~shoal.client.function.Function` whose app is a
:class:`DeployedApp`: every input goes to the server's pool of ``f`` over the
shared :class:`~shoal.client.connection.Connection`. A class found with
``shoal.Cls.from_name`` gives objects whose methods go to the pool of their
parameter set on the server.
"""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from shoal.bridge import run_sync
from shoal.client.connection import Connection, connect
from shoal.client.deploy import code_folder, declared, definitions, pack_folder
from shoal.client.map import MapProgress
from shoal.client.server_pool import ServerPool
from shoal.client.target import Target
from shoal.exception import InvalidError
from shoal.spec.function import CodeRef, FunctionSpec, dump_definitions

if TYPE_CHECKING:
    from shoal.client.app import App


class DeployedApp:
    """A deployed app as its looked-up handles see it (what ``App`` is to its own), or
    an ephemeral app an ``App`` runs on a server (:func:`run_ephemeral`)."""

    def __init__(
        self,
        name: str,
        connection: Connection,
        parameters: bytes = b"",
        web_urls: dict[str, str | None] | None = None,
        folder: str | None = None,
    ) -> None:
        self.name = name
        self.connection = connection
        self._parameters = parameters
        self._web_urls = web_urls or {}
        #: Where an ephemeral app's code came from (None: a deployed app, fixed; "": in
        #: place, on the embedded server).
        self._folder = folder
        self._pools: dict[str, ServerPool] = {}

    def web_url(self, name: str) -> str | None:
        return self._web_urls.get(name)

    def pool(self, name: str) -> ServerPool:
        pool = self._pools.get(name)
        if pool is None:  # made once per function: every call asks for it
            pool = self._pools[name] = ServerPool(
                self.connection, self.name, name, self._parameters
            )
        return pool

    def track(
        self, progress: MapProgress, chunks: AsyncIterator[list[Any]]
    ) -> AsyncIterator[list[Any]]:
        return chunks

    def declare(self, spec: FunctionSpec, code: Callable[[], CodeRef]) -> None:
        """Add a pool to an ephemeral app (blocks until the server has it).

        Raises:
            InvalidError: the app is deployed (redeploy it to change it), or the
                server refused the pool.
        """
        if self._folder is None:
            raise InvalidError(f"{spec.name} of deployed app {self.name!r}: redeploy to change it")
        definitions = dump_definitions([declared(spec, code(), self._folder)])
        run_sync(self.connection.request("app_declare", app=self.name, definitions=definitions))

    async def finish(self, drain: bool) -> None:
        """End the ephemeral app: now, or once its inputs are done when ``drain``."""
        if not self.connection.closed:
            await self.connection.request("app_finish", app=self.name, drain=drain)

    async def inputs_left(self) -> int | None:
        """Inputs the app still has queued or running, or None once it has ended."""
        for row in await self.connection.request("app_list"):
            if row["id"] == self.name:
                return int(row["inputs"])
        return None

    async def wait_drained(self, tell: Callable[[int], None]) -> None:
        """Wait until the (draining) app has ended; ``tell`` hears, once, how many inputs
        it had left to finish when there were some."""
        told = False
        while (left := await self.inputs_left()) is not None:
            if left and not told:
                tell(left)
                told = True
            await asyncio.sleep(_DRAIN_POLL)


async def run_ephemeral(app: App, target: Target, detach: bool) -> DeployedApp:
    """Start ``app`` as an ephemeral app on the server at ``target``: its code goes as a
    bundle, as for a deploy. It ends with :meth:`DeployedApp.finish`, or when this
    process's connection closes (a ``detach``-ed one once its inputs are done).

    Raises:
        ConnectionError, AuthError: the server cannot be reached.
        InvalidError: the server refused the app.
    """
    connection = await connect(target)
    # The embedded server, in this process, runs the code where it is: tracebacks and
    # reloads name the caller's own files. A server elsewhere gets it as a bundle.
    folder = "" if connection.local else code_folder(app)
    found = definitions(app, folder)
    known = {d.name for d in found}
    found += [
        declared(spec, code(), folder) for spec, code in app.declared() if spec.name not in known
    ]
    code = {"bundle": pack_folder(folder)} if folder else {}
    answer = await connection.request(
        "app_run",
        app=app.name or "app",
        definitions=dump_definitions(found),
        detach=detach,
        **code,
    )
    return DeployedApp(answer["app_id"], connection, web_urls=answer["web"], folder=folder)


#: Seconds between looks at a draining app that this process waits for.
_DRAIN_POLL = 0.2

#: How to look up each kind of deployed object.
_LOOKUP_WITH = {"function": "shoal.Function.from_name", "class": "shoal.Cls.from_name"}


async def lookup(app: str, name: str, kind: str) -> tuple[Connection, dict[str, Any]]:
    """What the server knows of ``name`` in ``app`` (see ``Server._op_lookup``), which
    must be a ``kind`` ("function" or "class").

    Raises:
        NotFoundError: no such app or function.
        InvalidError: ``name`` is of the other kind.
        ConnectionError: no server.
    """
    connection = await connect()
    info = await connection.request("lookup", app=app, function=name)
    found = info.get("kind")
    if found != kind:
        raise InvalidError(f"{app}/{name} is a {found}: use {_LOOKUP_WITH.get(found, '?')}")
    return connection, info


def pickled_parameters(bound: dict[str, Any]) -> bytes:
    """A class object's parameters as the server keys its pool: the same values give the
    same bytes."""
    return pickle.dumps(dict(sorted(bound.items())), protocol=4) if bound else b""
