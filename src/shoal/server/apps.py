"""Deployed apps: versions, code bundles, and the pools each version runs.

``shoal deploy`` sends an app's code as a bundle (a zip of its file and the
local modules it imports, :mod:`shoal.protocol.bundle`) and its definitions:
per function or class, its :class:`~shoal.spec.function.FunctionSpec`, a
:class:`~shoal.spec.function.CodeRef` whose paths are relative to the bundle,
and what a caller's handle needs to know (:class:`Definition`). The server
stores both, unpacks the bundle under its home once per content (where this
machine's containers find it; a container elsewhere fetches it by its digest), and
runs the version as a :class:`Deployment`: one pool per function, keyed
``(app, version, function)``, created at deploy time (so warm containers and
schedules start at once) or, for a class object's parameters, on first use.

A redeploy makes the new version current at once: new inputs, lookups and
HTTP requests go to it. The old version's pools take no new inputs and are
stopped only when their queues and containers are empty (inputs in flight
finish where they are), so a redeploy loses nothing.

An ephemeral app (``shoal run``/``app.run()`` against a server) is a
deployment that is not stored: it gets an id (``ap-...``) instead of a version,
is reached by that id (its web endpoints at ``/<id>/<function>``), and ends
when its client says so or goes away; a detached one first drains. Lookups by
name never find it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import sys
from collections.abc import Callable
from typing import Any

from shoal import log
from shoal.backends.base import BuildLog
from shoal.control.pool import Pool
from shoal.control.server import ControlPlane, app_of
from shoal.exception import Error, InvalidError, NotFoundError
from shoal.protocol import bundle
from shoal.server.store import Store, digest
from shoal.spec.events import StopReason
from shoal.spec.function import CodeRef, Definition, endpoint_name, load_definitions

#: How often a draining version checks whether its pools are empty (seconds).
_DRAIN_POLL = 0.1


class Deployment:
    """One running version of one app (see the module docstring)."""

    def __init__(
        self,
        app: str,
        version: int,
        definitions: list[Definition],
        bundle: str,
        control: ControlPlane,
    ) -> None:
        self.app = app
        #: What ``shoal app list`` calls it: the app's name (an ephemeral app's id is not).
        self.title = app
        #: An ephemeral app started detached: it drains when its client leaves.
        self.detached = False
        self.version = version
        self.definitions = {d.name: d for d in definitions}
        #: The SHA-256 of its code bundle ("": none, its code is on this machine already).
        self._bundle = bundle
        self._control = control
        self._pools: dict[str, Pool] = {}
        self.draining = False

    def start(self) -> None:
        """Create the pool of every function and parameterless class (warm containers,
        schedules)."""
        for definition in self.definitions.values():
            self._open(definition)

    def add(self, definitions: list[Definition]) -> None:
        """Add pools to a running app (an ephemeral app's client declares them as it
        goes: ``with_options`` variants, class objects); known names are kept."""
        for definition in definitions:
            if definition.name not in self.definitions:
                self.definitions[definition.name] = definition
                self._open(definition)

    def _open(self, definition: Definition) -> None:
        if definition.info.get("kind") == "function" or not definition.info.get("parameters"):
            self.pool(definition.name)

    def definition(self, name: str) -> Definition:
        found = self.definitions.get(name)
        if found is None:
            raise NotFoundError(
                f"app {self.app!r} (version {self.version}) has no function or class {name!r}; "
                f"it has {sorted(self.definitions)}"
            )
        return found

    def pool(self, name: str, parameters: bytes = b"") -> Pool:
        """The pool of function or class ``name`` (of that parameter set), created on
        first use.

        Raises:
            NotFoundError: the app has no such function or class.
        """
        key = f"{name}#{digest(parameters)[:16]}" if parameters else name
        pool = self._pools.get(key)
        if pool is not None:
            return pool
        definition = self.definition(name)
        spec, code = definition.spec, self._located(definition.code)
        if parameters:
            spec = dataclasses.replace(spec, name=f"{spec.name}#{digest(parameters)[:8]}")
            code = dataclasses.replace(code, parameters=parameters)
        # an ephemeral app's id means nothing to the one reading its output
        label = spec.name if self.version == 0 else self.key_of(spec.name)
        pool = self._control.add_pool(spec, code, key=self.key_of(key), label=label)
        self._pools[key] = pool
        return pool

    def pools(self) -> dict[str, Pool]:
        return dict(self._pools)

    def web_functions(self) -> list[str]:
        """The names of its web endpoints: functions by name, methods of a class as
        ``Cls.method``."""
        names = []
        for name, definition in self.definitions.items():
            if definition.info.get("web"):
                names.append(name)
            names += [endpoint_name(name, m) for m in definition.info.get("web_methods") or {}]
        return names

    def web_route(self, endpoint: str) -> tuple[str, str, dict[str, Any]] | None:
        """The pool name, method and options of web endpoint ``endpoint`` (a function's
        name, or ``Cls.method``), or None when it names none."""
        name, _, method = endpoint.partition(".")
        definition = self.definitions.get(name)
        if definition is None:
            return None
        web = (definition.info.get("web_methods") or {}).get(method) if method else None
        if not method:
            web = definition.info.get("web")
        return (name, method, web) if isinstance(web, dict) else None

    def key_of(self, name: str) -> str:
        """The control plane's key of this deployment's pool ``name``."""
        return f"{self.app}.v{self.version}.{name}"

    def _located(self, code: CodeRef) -> CodeRef:
        """``code``, whose paths are relative to this version's bundle, naming that bundle
        (each machine finds it unpacked in its own folder; with no bundle, as it is)."""
        return dataclasses.replace(code, bundle=self._bundle) if self._bundle else code

    @property
    def busy(self) -> bool:
        """Whether any of its pools still has inputs queued or running."""
        for pool in self._pools.values():
            stats = pool.stats()
            if stats.queued or stats.running:
                return True
        return False

    async def drain(self, reason: StopReason = "stop") -> None:
        """Wait until no input is queued or running, then stop every pool."""
        self.draining = True
        while self.busy:  # noqa: ASYNC110 - pools have no "empty" event; 10 checks a second cost nothing
            await asyncio.sleep(_DRAIN_POLL)
        await self.stop(reason)

    async def stop(self, reason: StopReason = "stop") -> None:
        """Stop every pool now (inputs still waiting fail); ``reason`` is why its
        containers stop (``"redeploy"``: a newer version replaced this one)."""
        self.draining = True
        pools, self._pools = self._pools, {}
        await asyncio.gather(*(self._control.remove_pool(self.key_of(k), reason) for k in pools))


class Apps:
    """Every deployed app of one server: the current :class:`Deployment` of each."""

    def __init__(self, store: Store, control: ControlPlane, home: str) -> None:
        self._store = store
        self._control = control
        self._bundles = os.path.join(home, "bundles")
        os.makedirs(self._bundles, mode=0o700, exist_ok=True)
        self._current: dict[str, Deployment] = {}
        #: Ephemeral apps by id.
        self._ephemeral: dict[str, Deployment] = {}
        self._draining: set[asyncio.Task[None]] = set()
        #: Called when an app stops running or starts draining (its endpoints' ports close).
        self.on_change: Callable[[], object] = lambda: None

    async def restore(self) -> None:
        """Run the current version of every app that was deployed when the server stopped
        (an image whose build now fails leaves its app stopped, with the error logged)."""
        for row in self._store.apps():
            if row.state != "deployed":
                continue
            version = next(v for v in self._store.versions(row.name) if v.version == row.version)
            self._unpack(version.bundle)
            definitions = load_definitions(version.functions)
            try:
                await self._build(definitions, None)
            except Error as exc:
                log.say(
                    f"app {row.name!r} v{row.version} not restored: {exc}",
                    component="apps",
                    level="error",
                    stream=sys.stdout,
                )
                continue
            deployment = Deployment(
                row.name, row.version, definitions, version.bundle, self._control
            )
            self._current[row.name] = deployment
            deployment.start()

    async def deploy(
        self,
        app: str,
        code: bytes,
        definitions: bytes,
        client: str,
        *,
        empty_ok: bool = False,
        log: BuildLog | None = None,
    ) -> Deployment:
        """Store and run a new version of ``app``; the previous one drains. ``empty_ok``
        lets it have no functions (``App.lookup(..., create_if_missing=True)``); ``log``
        hears the lines of its image builds.

        Raises:
            InvalidError: the bundle or the definitions are malformed, or the
                machine could never hold one of the functions' containers.
            ImageBuildError: an image of the app could not be built (nothing changed).
        """
        _check_name(app)
        parsed = await self._definitions(app, definitions, empty_ok, log)
        key = self._store.put_bundle(code)
        self._unpack(key)
        version = self._store.add_version(app, key, definitions, client)
        deployment = Deployment(app, version, parsed, key, self._control)
        previous = self._current.get(app)
        self._current[app] = deployment
        deployment.start()
        if previous is not None:
            self._retire(previous)
        return deployment

    async def _definitions(
        self, app: str, data: bytes, empty_ok: bool = False, log: BuildLog | None = None
    ) -> list[Definition]:
        """The checked definitions in ``data``, with their images built (their lines to
        ``log``)."""
        parsed = load_definitions(data)
        if not parsed and not empty_ok:
            raise InvalidError(f"app {app!r} has no functions to run")
        for definition in parsed:
            self._control.budget.ledger.check(definition.spec.resources, definition.name)
        await self._build(parsed, log)
        return parsed

    async def _build(self, definitions: list[Definition], log: BuildLog | None) -> None:
        """Check every named secret and volume, then build every image.

        Raises:
            NotFoundError: a named secret or volume does not exist.
            ImageBuildError: an image could not be built.
        """
        await self._control.prepare([definition.spec for definition in definitions], log)

    async def run_ephemeral(
        self,
        name: str,
        code: bytes | None,
        definitions: bytes,
        detach: bool,
        *,
        empty_ok: bool = False,
        log: BuildLog | None = None,
    ) -> Deployment:
        """Run an ephemeral app (not stored, reached by its id) from ``code`` and
        ``definitions`` as :meth:`deploy` takes them; with no ``code``, the definitions'
        paths are where the code is on this machine (the embedded server's own caller).

        Raises:
            InvalidError: as :meth:`deploy`.
        """
        _check_name(name)
        parsed = await self._definitions(name, definitions, empty_ok, log)
        key = "" if code is None else self._store.put_bundle(code)
        if key:
            self._unpack(key)
        app_id = f"ap-{secrets.token_hex(6)}"
        deployment = Deployment(app_id, 0, parsed, key, self._control)
        deployment.title = name
        deployment.detached = detach
        self._ephemeral[app_id] = deployment
        deployment.start()
        return deployment

    async def declare(self, app_id: str, definitions: bytes, log: BuildLog | None = None) -> None:
        """Add pools to the running ephemeral app ``app_id`` (see :meth:`Deployment.add`),
        their image builds' lines to ``log``.

        Raises:
            NotFoundError: no such ephemeral app runs.
            InvalidError: as :meth:`deploy`.
        """
        deployment = self._ephemeral.get(app_id)
        if deployment is None:
            raise NotFoundError(f"no ephemeral app {app_id!r} runs (it ended)")
        parsed = await self._definitions(app_id, definitions, log=log)
        if self._ephemeral.get(app_id) is deployment:  # it may have ended during a build
            deployment.add(parsed)

    def finish(self, app_id: str, *, drain: bool | None = None) -> None:
        """End ephemeral app ``app_id``: stop it now, or once its inputs are done when
        ``drain`` (default: whether it was started detached). It stays listed until it
        has ended; an app already ending is left alone."""
        deployment = self._ephemeral.get(app_id)
        if deployment is None or deployment.draining:
            return
        if drain is None:
            drain = deployment.detached
        deployment.draining = True
        self.on_change()
        task = asyncio.get_running_loop().create_task(self._end(app_id, deployment, drain))
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    async def _end(self, app_id: str, deployment: Deployment, drain: bool) -> None:
        try:
            await (deployment.drain() if drain else deployment.stop())
        finally:
            if self._ephemeral.get(app_id) is deployment:
                del self._ephemeral[app_id]

    def ephemeral_apps(self) -> list[Deployment]:
        """Every running ephemeral app."""
        return list(self._ephemeral.values())

    def _retire(self, deployment: Deployment) -> None:
        task = asyncio.get_running_loop().create_task(deployment.drain("redeploy"))
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    async def stop(self, app: str) -> None:
        """Stop ``app``'s deployment: its containers stop, inputs still waiting fail.

        Raises:
            NotFoundError: no app of that name runs.
        """
        deployment = self.current(app)
        if self._ephemeral.pop(app, None) is None:
            del self._current[app]
            self._store.set_app_state(app, "stopped")
        self.on_change()
        await deployment.stop()

    def current(self, app: str) -> Deployment:
        """The running version of ``app`` (a deployed app's name or an ephemeral app's id).

        Raises:
            NotFoundError: no app of that name is deployed (or it was stopped).
        """
        deployment = self._current.get(app) or self._ephemeral.get(app)
        if deployment is None:
            raise NotFoundError(
                f"no deployed app {app!r}; deploy it with `shoal deploy FILE.py`"
                + (f" (deployed: {sorted(self._current)})" if self._current else "")
            )
        return deployment

    def named(self, name: str, *, embedded: bool) -> Deployment | None:
        """The app ``App.lookup`` means by ``name``: the deployed one; on the embedded server,
        which runs only its process's apps, the first running app of that name."""
        found = self._current.get(name)
        if found is None and embedded:
            found = next((d for d in self._ephemeral.values() if d.title == name), None)
        return found

    def running(self) -> list[Deployment]:
        return list(self._current.values())

    def find_pool(self, namespace: str, name: str, parameters: bytes) -> Pool | None:
        """The pool that code in containers of pool namespace ``namespace`` means by
        ``name`` and ``parameters`` (``ControlPlane.pool_finder``): in the app's
        running version, created on first use; None for no such app or function."""
        app = app_of(namespace)
        deployment = None if app is None else self._current.get(app) or self._ephemeral.get(app)
        if deployment is None or name not in deployment.definitions:
            return None
        return deployment.pool(name, parameters)

    async def close(self) -> None:
        """Stop every deployment (the server is stopping)."""
        for task in list(self._draining):
            task.cancel()
        await asyncio.gather(*self._draining, return_exceptions=True)
        running = [*self._current.values(), *self._ephemeral.values()]
        await asyncio.gather(*(d.stop() for d in running))
        self._current.clear()
        self._ephemeral.clear()

    def _unpack(self, key: str) -> None:
        """Unpack bundle ``key`` where this machine's containers find it (checking it
        at deploy: a malformed bundle is refused then, not at a container's start)."""
        if not os.path.isdir(bundle.folder(self._bundles, key)):
            data = self._store.bundle(key)
            if data is None:
                raise NotFoundError(f"code bundle {key} is missing from the store")
            bundle.install(self._bundles, key, data)


def _check_name(app: str) -> None:
    if not app or "/" in app or len(app) > 64:
        raise InvalidError(f"app name {app!r}: 1-64 characters, no '/'")
