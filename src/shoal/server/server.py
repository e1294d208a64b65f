"""The Shoal server: deployed apps, their pools and containers, behind one token.

A :class:`Server` runs on one asyncio loop. It owns:

- its home directory (0700): the SQLite store (:mod:`shoal.server.store`),
  unpacked code bundles, the access-token file and ``server.json``, which tells
  clients on this machine where it listens;
- the control plane (:class:`~shoal.control.server.ControlPlane`): containers
  connect back to it, and every deployed function's pool lives in it;
- the deployed apps (:mod:`shoal.server.apps`) and durable spawns
  (:mod:`shoal.server.spawns`);
- a listener for clients (:mod:`shoal.server.session`), TCP, optionally TLS;
- the HTTP gateway for every deployed web endpoint, at ``/<app>/<function>/...``.

The same server is the embedded default (``ServerOptions.embedded``, started by
:mod:`shoal.server.embedded` in a caller's process when no server runs): it then
takes pipes instead of a TCP listener, restores nothing, keeps its apps' inputs in a
private store its process keeps from one start to the next, and opens the home's
store only for named objects (:class:`~shoal.server.objects.HomeObjects`).

Tokens: the store keeps the SHA-256 of each token that may connect. On first
start the server takes SHOAL_TOKEN, or creates a token, and writes it (0600) to
``<home>/token`` so that clients on this machine under the same user find it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import json
import os
import secrets
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shoal import log, settings
from shoal.backends import get_backend, isolation
from shoal.backends.base import Backend, BuildLog
from shoal.control.pool import Pool
from shoal.control.server import ControlPlane, call_op, print_line
from shoal.exception import InvalidError, NotFoundError
from shoal.protocol import bundle, pipe, transport
from shoal.server import execs, tracing
from shoal.server.apps import Apps, Deployment
from shoal.server.fields import data, seconds, text, whole
from shoal.server.log_files import LogFiles
from shoal.server.logs import LOGGED, Logs
from shoal.server.objects import HomeObjects, Objects
from shoal.server.sandboxes import Sandbox, Sandboxes, snapshot_recipe
from shoal.server.sandboxes import spec_of as sandbox_spec
from shoal.server.sandboxes import volumes_of as sandbox_volumes
from shoal.server.session import Session
from shoal.server.spawns import Spawns
from shoal.server.store import Store, lock_home
from shoal.spec.function import dump_definitions
from shoal.spec.image import dump_recipe, load_recipe
from shoal.spec.secrets import SecretSpec, check_values
from shoal.spec.secrets import merged as merged_secrets

if TYPE_CHECKING:  # the gateway (uvicorn) is imported only by a server that serves HTTP
    from shoal.gateway import server as gateway
    from shoal.server.dashboard import Dashboard
    from shoal.server.origins import WebOrigins
    from shoal.server.recorder import Recorder

#: Ports ``shoal server`` uses unless told otherwise.
DEFAULT_PORT = 7420
DEFAULT_HTTP_PORT = 8000


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    """How a server listens; ``port``/``http_port`` 0 pick free ports (tests)."""

    home: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    http_port: int | None = DEFAULT_HTTP_PORT
    tls_cert: str | None = None
    tls_key: str | None = None
    insecure: bool = False
    #: The embedded default (:mod:`shoal.server.embedded`): run in the caller's process,
    #: reached through pipes only, keeping nothing but the home's named objects.
    embedded: bool = False
    #: The token clients present (the embedded server's, made by its process); None: as
    #: the module docstring says.
    token: str | None = None
    #: The ports web endpoints may take for origins of their own (None: any free one).
    origin_ports: range | None = None
    #: Where containers run: a registered backend's name (None: SHOAL_BACKEND).
    backend: str | None = None
    #: The cluster a cluster backend attaches to (None: its default, SHOAL_RAY_ADDRESS).
    backend_address: str | None = None
    #: Where volumes live (None: the home's ``volumes/``); on a cluster, a folder every
    #: node mounts at the same path (volumes are refused on a cluster without it).
    volume_root: str | None = None
    #: Serve ``/metrics`` without the token (for a Prometheus on a trusted network).
    metrics_public: bool = False
    #: Run containers in jails (None: ``SHOAL_ISOLATION``; unset, on for a server where
    #: bubblewrap works and off for the embedded one; see :func:`isolated`).
    isolation: bool | None = None


class Server:
    """One server (see the module docstring)."""

    def __init__(self, options: ServerOptions, store: Store | None = None) -> None:
        """``store``: opened (and started) by the caller and kept when this server stops;
        the embedded server takes one that lives as long as its process (a server of
        its own would open the home's).

        Raises:
            InvalidError: an embedded server without a store.
        """
        if options.embedded and store is None:
            raise InvalidError(
                "an embedded server keeps its apps' inputs in a store of its process"
            )
        self.options = options
        self._given_store = store
        self.home = os.path.abspath(options.home)
        self.server_id = secrets.token_hex(8)
        self.url = ""
        self.http_url: str | None = None
        #: A token this start created (``shoal server`` prints it once), else None.
        self.new_token: str | None = None
        self._sessions: set[Session] = set()
        self._listener: asyncio.Server | None = None
        self._served: gateway.Served | None = None
        self._origins: WebOrigins | None = None
        self._dashboard: Dashboard | None = None
        self._tracer: tracing.InputTracer | None = None
        #: Sandboxes run here (Sandbox.create).
        self.sandboxes = Sandboxes()
        self._ticker: asyncio.Future[None] | None = None
        self._recorder: Recorder | None = None
        self._recording: asyncio.Future[None] | None = None
        self._digests: list[bytes] = []
        #: The spawns, once started: what :meth:`durable_spawns` gives the control plane.
        self._spawns_up: Spawns | None = None

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, restore deployments and spawns, and listen.

        Raises:
            InvalidError: a non-loopback address without TLS or ``insecure``.
            OSError: an address is in use.
            ExecutionError: another process owns the home.
        """
        options = self.options
        tls = self._tls()
        if not transport.is_loopback(options.host) and tls is None and not options.insecure:
            raise InvalidError(
                f"{options.host} is reachable from other hosts: give --tls-cert and --tls-key, "
                "or --insecure to send tokens and code in the clear"
            )
        os.makedirs(self.home, mode=0o700, exist_ok=True)
        os.chmod(self.home, 0o700)
        if options.embedded:
            # What its ephemeral apps leave (inputs) goes with the process; the home's
            # named objects are opened, and the home owned, on first use.
            self.objects: Objects | HomeObjects = HomeObjects(self.home)
        else:
            self._lock = lock_home(self.home)
        if self._given_store is not None:
            self.store = self._given_store
        else:
            self.store = Store(os.path.join(self.home, "shoal.db"))
            self.store.start(asyncio.get_running_loop())
        state = os.path.dirname(self.store.path)
        # Sandboxes end with the server that ran them: those a server before this one left
        # running are ended in the store, and this one's are kept there as they go.
        self.store.end_lost_sandboxes()
        store = self.store
        self.sandboxes.on_started = lambda sandbox: store.put_sandbox(sandbox.describe())
        self.sandboxes.on_ended = lambda sandbox: store.end_sandbox(
            sandbox.object_id, sandbox.returncode, sandbox.reason
        )
        if options.token is not None:
            self._digests = [hashlib.sha256(options.token.encode()).digest()]
        else:
            self._load_tokens()
        if not options.embedded:
            volumes = options.volume_root or os.path.join(self.home, "volumes")
            self.objects = Objects(self.store, volumes)
        logs = None
        if not options.embedded:  # an embedded server's output is its caller's
            logs = LogFiles(
                os.path.join(self.home, "logs"), settings.log_bytes(), settings.log_files()
            )
        self.logs = Logs(files=logs)
        backend = get_backend(options.backend, options.backend_address)
        # A server's containers run code of many users: they start from a built
        # environment, never with the server's own tokens (the embedded default runs
        # the caller's own code, as the caller).
        backend.inherit_environment = options.embedded
        backend.isolated = isolated(options, backend)
        # Deployed bundles are unpacked where this machine's containers look first.
        backend.bundle_cache = os.path.join(state, "bundles")
        files = (options.tls_cert or "", options.tls_key or "") if tls is not None else None
        self.control = ControlPlane(backend, self, tls=files)
        self.execs = execs.Execs(self.control)
        # An embedded server's containers print to the caller too; it keeps their last
        # lines in memory only, for f.get_logs().
        self.control.events.subscribe(self.logs.hear, *LOGGED)
        from shoal.server.metrics import labels_of

        self._tracer = tracing.start(self.control.events, labels_of)
        await self.control.start()
        self.apps = Apps(self.store, self.control, state)
        if not options.embedded:  # an embedded server runs only its caller's apps
            await self.apps.restore()
        self.spawns = Spawns(self.store, self.apps)
        self.spawns.start(restore=not options.embedded)
        self._spawns_up = self.spawns
        if options.embedded:
            self.url = pipe.listen("embedded", self._accept_pipe)
            return
        self._listener, self.url = await transport.listen(
            transport.tcp_address(options.host, options.port), self._accept, tls
        )
        self._record()
        if options.http_port is not None:
            from shoal.gateway import server as gateway
            from shoal.server.origins import WebOrigins

            tls_files = (options.tls_cert or "", options.tls_key or "") if tls else None
            self._served = await gateway.start(
                {},
                options.host,
                options.http_port,
                self._gateway_token(),
                self._resolve_web,
                tls_files,
            )
            self.http_url = self._served.url
            self._observe(self._served.gateway, tls is not None)
            self._origins = WebOrigins(self._served, self.store, self.apps, options.origin_ports)
            self.apps.on_change = self._origins.prune
            await self._origins.sync()
        self._write_address()

    def _record(self) -> None:
        """Record each function's traffic for ``shoal simulate`` (unless told not to), and
        write it and the buffered log lines once a second."""
        if settings.record_inputs():
            from shoal.server.metrics import labels_of
            from shoal.server.recorder import Recorder

            root = os.path.join(self.home, "recordings")
            self._recorder = Recorder(self.control.events, root, settings.record_limit(), labels_of)
        self._recording = asyncio.ensure_future(_every_second(self._housekeeping))

    async def open_console(
        self, host: str = "127.0.0.1", port: int = 0, token: str | None = None
    ) -> tuple[str, str]:
        """Serve this embedded server's dashboard and ``/metrics`` on ``host:port`` (0: a
        free port), behind ``token`` (a new one when None); no web endpoint is served
        there. Return the dashboard's URL and the token. A server with an HTTP port
        serves them there already: that URL is returned, with the token given.

        Raises:
            OSError: the address cannot be bound.
        """
        if self._served is not None:
            return f"{self.http_url}/_shoal/", token or ""
        from shoal.gateway import server as gateway

        token = token or secrets.token_urlsafe(24)
        self._digests.append(hashlib.sha256(token.encode()).digest())
        self._served = await gateway.start({}, host, port, token)
        self.http_url = self._served.url
        self._observe(self._served.gateway, secure=False)
        return f"{self.http_url}/_shoal/", token

    def _observe(self, gateway: gateway.Gateway, secure: bool) -> None:
        """Serve ``/metrics`` and the dashboard on the gateway's port."""
        from shoal.gateway.server import Page
        from shoal.gateway.tunnels import Tunnels
        from shoal.server.dashboard import Dashboard
        from shoal.server.metrics import CONTENT_TYPE, Metrics
        from shoal.server.timeline import Timeline

        metrics = Metrics(self.control.events, self.control.pools, gateway.tally)
        page = Page(
            lambda: (CONTENT_TYPE, metrics.scrape()), self.authorize, self.options.metrics_public
        )
        gateway.pages.update({"/metrics": page, "/_shoal/metrics": page})
        timeline = Timeline(self.control.events, self.control.pools)
        self._dashboard = Dashboard(self, timeline, secure=secure)
        gateway.console = self._dashboard
        gateway.tunnels = Tunnels(
            self._tunnel_port,
            self.authorize,
            settings.max_request_bytes(),
            settings.gateway_timeout(),
        )
        self._ticker = asyncio.ensure_future(_every_second(timeline.tick, metrics.note_lag))

    async def stop(self) -> None:
        """Stop listening, stop every container, and commit what the store has queued."""
        if self.options.embedded:
            pipe.unlisten(self.url)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.home, "server.json"))
        if self._listener is not None:
            self._listener.close()
        for session in list(self._sessions):
            session.protocol.abort()
        if self._ticker is not None:
            self._ticker.cancel()
        if self._recording is not None:
            self._recording.cancel()
        self._housekeeping()
        self.logs.close()
        if self._dashboard is not None:
            self._dashboard.close()  # its open streams end, so the gateway can stop
        if self._served is not None:
            await self._served.stop()
            if self._served.gateway.tunnels is not None:
                await self._served.gateway.tunnels.close()
        self.spawns.stop()
        await self.sandboxes.close()
        await self.apps.close()
        await self.control.stop()
        if self._tracer is not None:
            self._tracer.close()
        await self.store.flush()
        if self._given_store is None:
            self.store.close()
        if not self.options.embedded:
            os.close(self._lock)

    def _tls(self) -> ssl.SSLContext | None:
        cert, key = self.options.tls_cert, self.options.tls_key
        if cert is None and key is None:
            return None
        if cert is None or key is None:
            raise InvalidError("TLS needs both --tls-cert and --tls-key")
        return transport.server_tls(cert, key)

    def _load_tokens(self) -> None:
        given = settings.token()
        if given is not None:
            self.store.add_token(given)
            settings.write_private(os.path.join(self.home, "token"), given)
        elif not self.store.token_digests():
            self.new_token = secrets.token_urlsafe(32)
            self.store.add_token(self.new_token)
            settings.write_private(os.path.join(self.home, "token"), self.new_token)
        self._digests = [bytes.fromhex(d) for d in self.store.token_digests()]

    def _gateway_token(self) -> str:
        return settings.gateway_token() or _read(os.path.join(self.home, "token")) or ""

    def _write_address(self) -> None:
        info = {"url": self.url, "http_url": self.http_url, "pid": os.getpid()}
        settings.write_private(os.path.join(self.home, "server.json"), json.dumps(info))

    # -- sessions -------------------------------------------------------------------

    def _accept(self) -> asyncio.Protocol:
        session = Session(self)
        self._sessions.add(session)
        assert isinstance(session.protocol, asyncio.Protocol)
        return session.protocol

    def _accept_pipe(self) -> pipe.PipeEnd:
        session = Session(self, pipe.PipeEnd)
        self._sessions.add(session)
        assert isinstance(session.protocol, pipe.PipeEnd)
        return session.protocol

    def forget(self, session: Session) -> None:
        self._sessions.discard(session)

    # -- what the control plane asks of its host (control.server.Host) ------------------

    def secret_values(self, name: str) -> dict[str, str]:
        return self.objects.secret_values(name)

    async def handle_object(self, op: str, body: dict[str, Any]) -> Any:
        return await self.objects.handle(op, body)

    def volume_path(self, name: str) -> str:
        return self.objects.volume_path(name)

    async def handle_sandbox(self, op: str, body: dict[str, Any], app: str) -> Any:
        """A sandbox op of code in a container of ``app``: it makes sandboxes of its own app
        (whatever app it names), and finds and uses only those."""
        handler = getattr(self, f"_op_{op}", None) if op.startswith("sandbox_") else None
        if handler is None:
            raise InvalidError(f"{op!r} is not available to code inside a container")
        if body.get("image"):
            # An image arrives pickled (as a client's definitions do) and its build runs its
            # steps on this machine: neither is for code in a container.
            raise InvalidError("code in a container cannot give a sandbox an image")
        given = body.get("secrets") or []
        if isinstance(given, list) and any(isinstance(r, dict) and r.get("name") for r in given):
            # A container reads no named secret but those its function was given: naming one
            # for a sandbox would hand any secret of the server to code in a container.
            raise InvalidError(
                "code in a container cannot name secrets for a sandbox: pass their values "
                "(shoal.Secret.from_dict(dict(os.environ)) of the function's own secrets)"
            )
        if body.get("object_id"):
            if self._sandbox(body).spec.app != app:
                raise NotFoundError(f"no sandbox {body['object_id']!r} of this app")
        else:  # create, list, or a lookup by name: in its own app
            body = {**body, "app": app}
        return await handler(body, None)

    def volumes_shared(self) -> bool:
        return self.options.volume_root is not None

    def durable_spawns(self) -> Spawns | None:
        """Containers' spawns are stored too, once the spawns are up."""
        return self._spawns_up

    def find_pool(self, namespace: str, name: str, parameters: bytes) -> Pool | None:
        return self.apps.find_pool(namespace, name, parameters)

    def bundle(self, digest: str) -> bytes | None:
        return self.store.bundle(digest)

    def authorize(self, token: object) -> bool:
        """Whether ``token`` is one that may connect (compared in constant time)."""
        if not isinstance(token, str) or not token:
            return False
        presented = hashlib.sha256(token.encode()).digest()
        found = False
        for digest in self._digests:
            found |= hmac.compare_digest(presented, digest)
        return found

    def pool_for(self, app: str, function: str, parameters: bytes = b"") -> Pool:
        """The pool of ``function`` in the current version of ``app``.

        Raises:
            NotFoundError: no such app or function.
        """
        return self.apps.current(app).pool(function, parameters)

    # -- the gateway --------------------------------------------------------------------

    def _resolve_web(self, path: str) -> tuple[gateway.Route, str, str] | None:
        app, _, rest = path.lstrip("/").partition("/")
        function, _, rest = rest.partition("/")
        try:
            deployment = self.apps.current(app)
        except NotFoundError:
            return None
        found = deployment.web_route(function)
        if found is None:
            return None
        pool_name, method, web = found
        needs_token = bool(web.get("requires_auth")) or not transport.is_loopback(self.options.host)
        from shoal.gateway.server import Route

        route = Route(lambda: deployment.pool(pool_name), needs_token, method)
        return route, f"{app}/{function}", rest

    def web_url(self, app: str, function: str) -> str | None:
        """Endpoint ``function`` of ``app``: at its own origin (see ``server/origins.py``),
        else under the gateway's port."""
        origin = None if self._origins is None else self._origins.url(app, function)
        if origin is not None or self.http_url is None:
            return origin
        return f"{self.http_url}/{app}/{function}"

    # -- requests ---------------------------------------------------------------------

    async def handle(self, op: str, body: dict[str, Any], session: Session) -> Any:
        """Answer one control request of ``session``'s client (see
        :mod:`shoal.client.connection` for the ops).

        Raises:
            InvalidError: an unknown op or a malformed body.
            NotFoundError: the app, function, container or call does not exist.
        """
        if op.startswith(("dict_", "queue_", "volume_", "secret_")):
            result = await self.objects.handle(op, body)
            if op.endswith("_ephemeral"):
                session.own_object(result["name"])
            return result
        handler = getattr(self, f"_op_{op}", None)
        if handler is None:
            raise InvalidError(f"unknown request {op!r}")
        return await handler(body, session)

    async def _op_ping(self, body: dict[str, Any], session: Session) -> Any:
        return {"server_id": self.server_id}

    async def _op_deploy(self, body: dict[str, Any], session: Session) -> Any:
        deployment = await self.apps.deploy(
            text(body, "app"),
            data(body, "bundle"),
            data(body, "definitions"),
            str(body.get("client", "")),
            log=self._build_log(session),
        )
        return {
            "version": deployment.version,
            "web": await self._web_urls(deployment),
            "paths": self._path_urls(deployment),
            "functions": {
                name: d.info.get("kind", "function")
                for name, d in sorted(deployment.definitions.items())
            },
        }

    def _build_log(self, session: Session | None) -> BuildLog | None:
        """Where the lines of builds ``session``'s request waits for go, beside this
        server's stdout: to its client, unless that is this very process (or a
        container, which has no session)."""
        return None if self.options.embedded or session is None else session.build_log

    def _sandbox_build_log(self, session: Session | None) -> Callable[[str], None]:
        """Where a sandbox image's build lines go: this server's stdout, and the client
        that waits for it (as :meth:`_build_log`)."""
        client = self._build_log(session)

        def log(line: str) -> None:
            print_line(line)
            if client is not None:
                client(line)

        return log

    def _path_urls(self, deployment: Deployment) -> dict[str, str]:
        """Each web endpoint's URL under the gateway's own port, which never moves."""
        if self.http_url is None:
            return {}
        return {
            name: f"{self.http_url}/{deployment.app}/{name}" for name in deployment.web_functions()
        }

    async def _web_urls(self, deployment: Deployment) -> dict[str, str | None]:
        if self._origins is not None:
            await self._origins.sync()
        return {name: self.web_url(deployment.app, name) for name in deployment.web_functions()}

    async def _op_app_run(self, body: dict[str, Any], session: Session) -> Any:
        """Start an ephemeral app that lives as long as ``session`` (or, detached,
        until its inputs are done after that)."""
        detach = bool(body.get("detach", False))
        # The embedded server's client is this process: its code runs where it is, so it
        # sends no bundle (and code paths of its own); any other client sends one.
        code = None if self.options.embedded and "bundle" not in body else data(body, "bundle")
        deployment = await self.apps.run_ephemeral(
            text(body, "app"), code, data(body, "definitions"), detach, log=self._build_log(session)
        )
        session.own(deployment.app)
        if not self.options.embedded:  # the embedded server's containers print to it already
            session.watch_output(deployment.app)
        return {"app_id": deployment.app, "web": await self._web_urls(deployment)}

    async def _op_app_declare(self, body: dict[str, Any], session: Session) -> Any:
        await self.apps.declare(
            text(body, "app"), data(body, "definitions"), self._build_log(session)
        )
        return {}

    async def _op_app_finish(self, body: dict[str, Any], session: Session) -> Any:
        app_id = text(body, "app")
        session.disown(app_id)
        self.apps.finish(app_id, drain=bool(body.get("drain", False)))
        return {}

    async def _op_app_lookup(self, body: dict[str, Any], session: Session) -> Any:
        """The app of a name (``App.lookup``): a deployed one, or on the embedded server an
        app of its process; with ``create``, made empty when there is none."""
        name = text(body, "app")
        found = self.apps.named(name, embedded=self.options.embedded)
        if found is not None:
            return {"app_id": found.app, "created": False}
        if not body.get("create"):
            raise NotFoundError(
                f"no app {name!r}; deploy one with `shoal deploy FILE.py`, or look it up with "
                "create_if_missing=True"
            )
        empty = dump_definitions([])
        if self.options.embedded:  # lives as long as this server: owned by no session
            made = await self.apps.run_ephemeral(name, None, empty, False, empty_ok=True)
        else:
            made = await self.apps.deploy(name, bundle.pack({}), empty, "", empty_ok=True)
        return {"app_id": made.app, "created": True}

    async def _op_lookup(self, body: dict[str, Any], session: Session) -> Any:
        app = text(body, "app")
        deployment = self.apps.current(app)
        name = text(body, "function")
        definition = deployment.definition(name)
        info = dict(definition.info)
        if info.get("web"):
            info["web_url"] = self.web_url(app, name)
        info["web_urls"] = {
            f"{name}.{method}": self.web_url(app, f"{name}.{method}")
            for method in info.get("web_methods") or {}
        }
        info["version"] = deployment.version
        info["scaling"] = dataclasses.asdict(definition.spec.scaling)
        return info

    async def _op_app_list(self, body: dict[str, Any], session: Session) -> Any:
        return self.app_rows()

    def app_rows(self) -> list[dict[str, Any]]:
        """One row per app: deployed ones (their current version) and ephemeral ones."""
        running = {d.app: d for d in self.apps.running()}
        rows = []
        for row in self.store.apps():
            deployment = running.get(row.name)
            rows.append(_app_row(row.name, row.version, row.state, row.updated, deployment))
        for deployment in self.apps.ephemeral_apps():
            state = "detached" if deployment.detached else "ephemeral"
            state = "stopping" if deployment.draining else state
            rows.append(_app_row(deployment.title, 0, state, 0.0, deployment, deployment.app))
        return rows

    def pool_of(self, key: str) -> tuple[Pool, str | None] | None:
        """The pool of key ``key`` (``<app>.v<version>.<function>``), made if a running
        app has that function and has not used it yet, and its web URL when it is a web
        endpoint; None when no running app has it."""
        for deployment in [*self.apps.running(), *self.apps.ephemeral_apps()]:
            for name in deployment.definitions:
                if deployment.key_of(name) == key:
                    web = name in deployment.web_functions()
                    url = self.web_url(deployment.app, name) if web else None
                    return deployment.pool(name), url
        found = self.control.pools().get(key)  # a class's pool of one parameter set
        return None if found is None else (found, None)

    async def _op_simulate(self, body: dict[str, Any], session: Session) -> Any:
        return await self.simulate(
            text(body, "app"), text(body, "function"), body.get("runs"), body.get("since", 0)
        )

    async def simulate(self, app: str, function: str, runs: Any, since: Any = 0) -> Any:
        """Replay a function's recorded traffic under other scaling settings (see
        :mod:`shoal.server.simulator`): the recorded run's figures, and each run's.

        Raises:
            InvalidError: bad settings, or the server records nothing.
            NotFoundError: no such app or function, or no traffic recorded.
        """
        from shoal.server import simulator

        if self._recorder is None:
            raise InvalidError("this server records no traffic (SHOAL_RECORD_INPUTS=0)")
        runs = runs or [{}]
        if (
            not isinstance(runs, list)
            or len(runs) > 500
            or not all(isinstance(r, dict) for r in runs)
        ):
            raise InvalidError("runs: expected a list of at most 500 maps of settings")
        if not isinstance(since, int | float) or since < 0:
            raise InvalidError("since: expected seconds >= 0")
        definition = self.apps.current(app).definition(function)
        base, timeout = definition.spec.scaling, definition.spec.timeout
        recording = self._recorder.recording(app, function)
        if since:
            recording = recording.since(time.time() - since)
        if not recording.inputs:
            raise NotFoundError(f"no traffic of {app}.{function} is recorded (yet)")
        scalings = [simulator.scaling_with(base, run) for run in runs]  # checked before work

        def work() -> list[dict[str, Any]]:
            return [simulator.replay(recording, s, timeout).row() for s in scalings]

        outcomes = await asyncio.to_thread(work)
        return {
            "settings": dataclasses.asdict(base),
            "recorded": simulator.measured(recording).row(),
            "runs": [{"changes": run, "outcome": o} for run, o in zip(runs, outcomes, strict=True)],
        }

    async def _op_app_stop(self, body: dict[str, Any], session: Session) -> Any:
        app = text(body, "app")
        await self.sandboxes.stop_app(app)
        await self.apps.stop(app)
        return {}

    # -- sandboxes (see server/sandboxes.py) ------------------------------------------

    async def _op_sandbox_create(self, body: dict[str, Any], session: Session | None) -> Any:
        image, recipe = None, None
        if body.get("image"):
            try:
                recipe = load_recipe(data(body, "image"))
            except ValueError as exc:
                raise InvalidError(str(exc)) from None
            image = await self.sandboxes.build_image(recipe, self._sandbox_build_log(session))
        env = self._secret_env(body)
        folders = []
        for inside, name, create, read_only in sandbox_volumes(body):
            await self.objects.handle("volume_open", {"name": name, "create": create})
            folders.append((inside, self.volume_path(name), read_only))
        spec = sandbox_spec({**body, "env": env, "volume_folders": folders}, image, recipe)
        sandbox = await self.sandboxes.create(spec)
        return {"object_id": sandbox.object_id}

    def _sandbox(self, body: dict[str, Any]) -> Sandbox:
        return self.sandboxes.get(text(body, "object_id"))

    def _stored_sandbox(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The store's row of a sandbox that is not running here (it ended, maybe with a
        server before this one); None when the sandbox runs, or was never known."""
        object_id = text(body, "object_id")
        with contextlib.suppress(NotFoundError):
            self.sandboxes.get(object_id)
            return None
        return self.store.sandbox(object_id)

    async def _op_sandbox_get(self, body: dict[str, Any], session: Session | None) -> Any:
        if body.get("object_id"):
            return self._stored_sandbox(body) or self._sandbox(body).describe()
        app, name = text(body, "app"), text(body, "name")
        found = self.sandboxes.named(app, name)
        if found is None:
            raise NotFoundError(f"no running sandbox {name!r} in app {app!r}")
        return found.describe()

    async def _op_sandbox_list(self, body: dict[str, Any], session: Session | None) -> Any:
        app, tags = body.get("app") or "", body.get("tags") or {}
        if not isinstance(app, str) or not isinstance(tags, dict):
            raise InvalidError("sandbox_list: app is text, tags a map")
        if not body.get("all"):
            return [s.describe() for s in self.sandboxes.list(app, tags)]
        # Ended ones too, from the store (live ones as they are now).
        live = {s.object_id: s.describe() for s in self.sandboxes.list(app)}
        rows = [live.get(row["object_id"], row) for row in self.store.sandboxes(app)]
        return [r for r in rows if all(r["tags"].get(k) == v for k, v in tags.items())]

    async def _op_sandbox_set_tags(self, body: dict[str, Any], session: Session | None) -> Any:
        tags = body.get("tags")
        if not isinstance(tags, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
        ):
            raise InvalidError("tags: expected a map of strings")
        self._sandbox(body).tags = dict(tags)
        self.store.set_sandbox_tags(text(body, "object_id"), dict(tags))
        return {}

    async def _op_sandbox_logs(self, body: dict[str, Any], session: Session | None) -> Any:
        """The last lines the sandbox's own command wrote (see sandboxes.Log)."""
        lines = self._sandbox(body).log.lines
        return [{"time": t, "stream": which, "text": text} for t, which, text in lines]

    async def _op_sandbox_tunnels(self, body: dict[str, Any], session: Session | None) -> Any:
        sandbox = self._sandbox(body)
        found: dict[str, dict[str, Any]] = {}
        for port, (host_port, encrypted) in sandbox.tunnels.items():
            if encrypted:
                if self.http_url is None:
                    raise InvalidError("encrypted ports are served by a server's gateway")
                url = f"{self.http_url}/_shoal/tunnels/{sandbox.object_id}/{port}"
                found[str(port)] = {"url": url, "unencrypted": None}
            else:
                url = f"http://127.0.0.1:{host_port}"
                found[str(port)] = {"url": url, "unencrypted": ["127.0.0.1", host_port]}
        return found

    async def _op_sandbox_snapshot(self, body: dict[str, Any], session: Session | None) -> Any:
        sandbox = self._sandbox(body)
        files = await sandbox.snapshot(settings.max_payload_bytes() // 2)
        return {"image": dump_recipe(snapshot_recipe(sandbox.spec.recipe, files))}

    async def _op_sandbox_watch(self, body: dict[str, Any], session: Session | None) -> Any:
        number = await self._sandbox(body).watch(text(body, "path"), bool(body.get("recursive")))
        return {"watch": number}

    async def _op_sandbox_watch_read(self, body: dict[str, Any], session: Session | None) -> Any:
        watch = self._sandbox(body).watched(whole(body, "watch"))
        return await watch.read(whole(body, "offset"), seconds(body, "wait"))

    async def _op_sandbox_unwatch(self, body: dict[str, Any], session: Session | None) -> Any:
        await self._sandbox(body).unwatch(whole(body, "watch"))
        return {}

    def _tunnel_port(self, object_id: str, port: int) -> int | None:
        """The host port a sandbox's encrypted ``port`` is forwarded to (None: none)."""
        try:
            sandbox = self.sandboxes.get(object_id)
        except NotFoundError:
            return None
        host_port, encrypted = sandbox.tunnels.get(port, (0, False))
        return host_port if encrypted and not sandbox.ended.is_set() else None

    async def _op_sandbox_wait(self, body: dict[str, Any], session: Session | None) -> Any:
        stored = self._stored_sandbox(body)
        if stored is not None:
            return {"returncode": stored["returncode"], "reason": stored["reason"]}
        sandbox = self._sandbox(body)
        await _waited(sandbox.ended, seconds(body, "wait"))
        return {"returncode": sandbox.returncode, "reason": sandbox.reason}

    async def _op_sandbox_terminate(self, body: dict[str, Any], session: Session | None) -> Any:
        if self._stored_sandbox(body) is not None:
            return {}  # it ended already
        sandbox = self._sandbox(body)
        sandbox.terminate()
        await sandbox.wait_closed()
        return {}

    def _secret_env(self, body: dict[str, Any]) -> dict[str, str]:
        """The variables the ``secrets`` of a sandbox request set (named ones looked up
        here, as for functions).

        Raises:
            InvalidError: malformed, or a secret lacks a required key.
            NotFoundError: a named secret does not exist.
        """
        given = body.get("secrets") or []
        specs = []
        for row in given if isinstance(given, list) else [None]:
            if not isinstance(row, dict):
                raise InvalidError("secrets: expected a list of secrets")
            name, values, keys = row.get("name"), row.get("values"), row.get("required_keys")
            if not isinstance(name, str) or not isinstance(values, dict):
                raise InvalidError('secrets: each has a name (or "") and values')
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise InvalidError("secrets: required_keys is a list of names")
            specs.append(
                SecretSpec(
                    values=check_values(values, "a sandbox's secret"),
                    name=name or None,
                    required_keys=tuple(keys),
                )
            )
        return merged_secrets(specs, self.control.secret_lookup)

    async def _op_sandbox_exec(self, body: dict[str, Any], session: Session | None) -> Any:
        argv, env = body.get("argv"), self._secret_env(body)
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise InvalidError("argv: expected a non-empty list of strings")
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items()
        ):
            raise InvalidError("env: expected a map of strings")
        workdir = body.get("workdir") or None
        timeout = body.get("timeout")
        if workdir is not None and not isinstance(workdir, str):
            raise InvalidError("workdir: expected a path")
        if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
            raise InvalidError("timeout: expected seconds above 0")
        proc = await self._sandbox(body).exec(argv, workdir, env, timeout, bool(body.get("pty")))
        return {"proc": proc}

    async def _op_sandbox_read(self, body: dict[str, Any], session: Session | None) -> Any:
        offset, limit = whole(body, "offset"), whole(body, "limit") or 1 << 20
        return await self._sandbox(body).read(
            whole(body, "proc"), whole(body, "fd"), offset, seconds(body, "wait"), limit
        )

    async def _op_sandbox_write(self, body: dict[str, Any], session: Session | None) -> Any:
        given = body.get("data") or b""
        if not isinstance(given, bytes):
            raise InvalidError("data: expected bytes")
        self._sandbox(body).write(whole(body, "proc"), given, bool(body.get("eof")))
        return {}

    async def _op_sandbox_proc_wait(self, body: dict[str, Any], session: Session | None) -> Any:
        command = self._sandbox(body).command(whole(body, "proc"))
        await _waited(command.exited, seconds(body, "wait"))
        return {"code": command.code}

    async def _op_sandbox_file(self, body: dict[str, Any], session: Session | None) -> Any:
        op = text(body, "action")
        if op not in ("read", "write", "ls", "mkdir", "rm", "stat"):
            raise InvalidError(f"op {op!r}: expected read, write, ls, mkdir, rm or stat")
        fields: dict[str, Any] = {"path": text(body, "path")}
        if op == "write":
            fields.update(data=data(body, "data"), append=bool(body.get("append")))
        fields.update(parents=bool(body.get("parents")), recursive=bool(body.get("recursive")))
        return {"result": await self._sandbox(body).file(op, **fields)}

    def _housekeeping(self) -> None:
        """Once a second: write the recorded traffic and the buffered log lines."""
        if self._recorder is not None:
            self._recorder.flush()
        self.logs.flush()

    async def _op_app_logs(self, body: dict[str, Any], session: Session) -> Any:
        app = text(body, "app")
        after = body.get("cursor", body.get("after", ""))
        if not isinstance(after, int | str):
            raise InvalidError("cursor: expected a line's cursor")
        if not self.logs.has(app):
            self.apps.current(app)  # NotFoundError for an app that is not there at all
        filters = _log_filters(body)
        tail = _tail(body)
        if not after and (tail is not None or filters):
            return self.logs.search(app, tail, **filters)
        answer = self.logs.after(app, after)
        return self.logs.filtered(answer, **filters) if filters else answer

    async def _op_function_logs(self, body: dict[str, Any], session: Session) -> Any:
        """Function ``function``'s lines of app ``app``, filtered as ``app_logs`` filters
        them."""
        app = text(body, "app")
        if not self.logs.has(app):
            self.apps.current(app)  # NotFoundError for an app that is not there at all
        filters = {**_log_filters(body), "function": text(body, "function")}
        return self.logs.search(app, _tail(body), **filters)

    async def _op_app_history(self, body: dict[str, Any], session: Session) -> Any:
        app = text(body, "app")
        versions = self.store.versions(app)
        if not versions:
            raise NotFoundError(f"no app {app!r} was ever deployed here")
        return [
            {
                "version": v.version,
                "bundle": v.bundle[:12],
                "created": v.created,
                "client": v.client,
            }
            for v in versions
        ]

    async def _op_container_list(self, body: dict[str, Any], session: Session) -> Any:
        rows = []
        for key, pool in self.control.pools().items():
            for container in pool.containers():
                rows.append({**container, "pool": key})
        return rows

    async def _op_container_stop(self, body: dict[str, Any], session: Session) -> Any:
        container_id = text(body, "id")
        for pool in self.control.pools().values():
            if pool.stop_container(container_id):
                return {}
        raise NotFoundError(f"no running container {container_id!r}")

    async def _op_container_exec(self, body: dict[str, Any], session: Session) -> Any:
        argv = body.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise InvalidError("argv: expected a non-empty list of strings")
        timeout = seconds(body, "timeout") or execs.TIMEOUT
        command = self.execs.start(text(body, "id"), argv, timeout)
        return {"exec_id": command.exec_id}

    async def _op_container_exec_read(self, body: dict[str, Any], session: Session) -> Any:
        command = self.execs.get(text(body, "exec_id"))
        fd = whole(body, "fd")
        if fd not in command.streams:
            raise InvalidError(f"fd {fd}: expected 1 (stdout) or 2 (stderr)")
        limit = whole(body, "limit") or 1 << 20
        return await command.streams[fd].read(whole(body, "offset"), seconds(body, "wait"), limit)

    async def _op_container_exec_wait(self, body: dict[str, Any], session: Session) -> Any:
        command = self.execs.get(text(body, "exec_id"))
        return await execs.wait_for(command, seconds(body, "wait"))

    def _pool_of(self, body: dict[str, Any]) -> Pool:
        parameters = body.get("parameters", b"")
        if not isinstance(parameters, bytes):
            raise InvalidError("parameters: expected bytes")
        return self.pool_for(text(body, "app"), text(body, "function"), parameters)

    async def _op_stats(self, body: dict[str, Any], session: Session) -> Any:
        return dataclasses.asdict(self._pool_of(body).stats())

    async def _op_update_scaling(self, body: dict[str, Any], session: Session) -> Any:
        changes = body.get("changes")
        if not isinstance(changes, dict):
            raise InvalidError("changes: expected a map")
        self._pool_of(body).update_scaling(**changes)
        return {}

    async def _op_call_cancel(self, body: dict[str, Any], session: Session) -> Any:
        return call_op(self.spawns, "call_cancel", text(body, "object_id"))

    async def _op_call_graph(self, body: dict[str, Any], session: Session) -> Any:
        return call_op(self.spawns, "call_graph", text(body, "object_id"))

    async def _op_call_logs(self, body: dict[str, Any], session: Session) -> Any:
        """What stored call ``object_id`` printed (its app's lines marked as its)."""
        object_id = text(body, "object_id")
        app = self.spawns.app_of(object_id)
        if app is None:
            raise NotFoundError(f"no function call {object_id!r}")
        return self.logs.search(app, None, input=object_id)


async def _waited(event: asyncio.Event, wait: float) -> None:
    """Wait for ``event``, up to ``wait`` seconds (at most 30: a long-poll's turn)."""
    if not event.is_set() and wait > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), min(wait, 30.0))


async def _every_second(
    tick: Callable[[], object], lag: Callable[[float], None] | None = None
) -> None:
    """Call ``tick`` once a second, on the second's schedule (a slow tick does not
    push the next ones later), and tell ``lag`` how late the loop woke for it."""
    loop = asyncio.get_running_loop()
    due = loop.time()
    while True:
        due += 1.0
        await asyncio.sleep(max(0.0, due - loop.time()))
        late = loop.time() - due
        if lag is not None:
            lag(max(0.0, late))
        if late > 5.0:
            due = loop.time()  # the loop was stalled: start the schedule again
        tick()


def _tail(body: dict[str, Any]) -> int | None:
    """The ``tail`` of a logs request: a number of lines >= 0, or None for all."""
    tail = body.get("tail")
    if tail is not None and (not isinstance(tail, int) or tail < 0):
        raise InvalidError("tail: expected a number of lines >= 0")
    return tail


def _log_filters(body: dict[str, Any]) -> dict[str, Any]:
    """The filters of an ``app_logs`` request that are given (see log_files.matching)."""
    filters: dict[str, Any] = {}
    for name in ("since", "until"):
        value = body.get(name)
        if value is not None:
            if not isinstance(value, int | float):
                raise InvalidError(f"{name}: expected a time in seconds since the epoch")
            filters[name] = float(value)
    for name in ("search", "function", "container", "input"):
        value = body.get(name)
        if value:
            if not isinstance(value, str):
                raise InvalidError(f"{name}: expected text")
            filters[name] = value
    return filters


def _app_row(
    name: str,
    version: int,
    state: str,
    updated: float,
    deployment: Deployment | None,
    app_id: str = "",
) -> dict[str, Any]:
    """One row of ``shoal app list``."""
    pools = deployment.pools().values() if deployment else []
    return {
        "name": name,
        "id": app_id or name,
        "version": version,
        "state": state,
        "updated": updated,
        "functions": sorted(deployment.definitions) if deployment else [],
        "containers": sum(len(p.containers()) for p in pools),
        "inputs": sum(stats.queued + stats.running for stats in (p.stats() for p in pools)),
        "pools": {name: deployment.key_of(name) for name in sorted(deployment.definitions)}
        if deployment
        else {},
    }


def _read(path: str) -> str | None:
    try:
        with open(path) as source:
            return source.read().strip() or None
    except OSError:
        return None


def isolated(options: ServerOptions, backend: Backend) -> bool:
    """Whether ``backend``'s containers run in jails, and a line on stderr where that
    is worth knowing: a server with isolation off, or without it for want of bubblewrap.

    Raises:
        InvalidError: isolation was asked for and cannot be had here.
    """
    try:
        wanted = options.isolation if options.isolation is not None else settings.isolation()
        settings.container_transport()  # read with the rest at start: a bad value said here
    except ValueError as exc:
        raise InvalidError(str(exc)) from None
    if not backend.one_machine:  # each node checks for itself (one that cannot is left out)
        if not wanted and not options.embedded:
            log.say(
                "warning: containers on the cluster run unisolated (--isolation on jails them, "
                "on the nodes where bubblewrap works)",
                component="server",
                level="warning",
            )
        return bool(wanted)
    why = isolation.problem()
    if wanted and why:
        raise InvalidError(f"isolation is on, but {why}")
    if wanted is None:
        wanted = not options.embedded and not why
        if not options.embedded and why:
            log.say(
                f"warning: containers run unisolated: {why}", component="server", level="warning"
            )
    elif not wanted and not options.embedded:
        log.say(
            "warning: isolation is off: containers run as plain processes of this server's "
            "user and can read its files, its home and its token",
            component="server",
            level="warning",
        )
    return wanted
