"""The control plane: a socket that containers connect to, and the pools they serve.

One :class:`ControlPlane` runs on one asyncio loop (a background thread of the
caller under ``app.run()``). It owns a private directory (mode 0700) holding its
socket (or, with SHOAL_CONTAINER_TRANSPORT=tcp, a port on 127.0.0.1), a random
secret from which each container's own token is derived (the container must present
it in its first frame before anything else is read from it), the backend that
starts containers, and one :class:`~shoal.control.pool.Pool` per function.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import itertools
import json
import os
import re
import secrets
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgpack

from shoal import log, settings
from shoal.backends.base import Backend, BuildLog, ContainerLaunch
from shoal.control import run_dir
from shoal.control.budget import ContainerBudget
from shoal.control.calls import InputRecord
from shoal.control.containers import ContainerHandle
from shoal.control.events import EventBus
from shoal.control.intake import CALLS, DurableSpawns, Intake
from shoal.control.placement import Ledger
from shoal.control.pool import Pool
from shoal.control.scheduler import Scheduler
from shoal.control.tally import ContainerTally
from shoal.exception import ExecutionError, InvalidError, NotFoundError
from shoal.protocol import transport
from shoal.protocol.framing import FRAME_OVERHEAD, FramedProtocol
from shoal.protocol.messages import Exec, ExecDone, ExecOutput, Hello, Message, Reply, Request
from shoal.spec.call_graph import to_wire
from shoal.spec.events import ContainerOutput, StopReason
from shoal.spec.function import CodeRef, FunctionSpec
from shoal.spec.image import Environment, Recipe, user_paths
from shoal.spec.log_line import unmarked
from shoal.spec.resources import Grant
from shoal.spec.secrets import Lookup
from shoal.spec.secrets import merged as secrets_env

#: See :attr:`ControlPlane.pool_finder`.
PoolFinder = Callable[[str, str, bytes], "Pool | None"]

#: Answers one Dict or Queue op (its name and msgpack body) with a msgpack-able value.
ObjectHandler = Callable[[str, dict[str, Any]], Awaitable[Any]]


def call_op(spawns: DurableSpawns, op: str, object_id: str) -> dict[str, Any]:
    """Answer ``call_cancel`` or ``call_graph`` on spawn ``object_id``.

    Raises:
        NotFoundError: no such spawn.
    """
    if op == "call_graph":
        return {"graph": to_wire(spawns.graph(object_id))}
    if not spawns.cancel(object_id):
        raise NotFoundError(f"no function call {object_id!r}")
    return {}


def app_of(namespace: str) -> str | None:
    """The app a pool namespace belongs to (``"svc.v3."`` is app ``svc``), if any.

    Example::

        >>> app_of("ap-1f2e.v0."), app_of("")
        ('ap-1f2e', None)
    """
    match = re.fullmatch(r"(.+)\.v\d+\.", namespace)
    return match.group(1) if match else None


class Host(Protocol):
    """What a control plane asks of whoever hosts it (a server), given when it is built.

    It asks at the moment it needs each, so a host may finish building its parts (its
    apps and spawns, which need the control plane) after the control plane.
    """

    def secret_values(self, name: str) -> dict[str, str]:
        """A named secret's values (raises NotFoundError)."""
        ...

    async def handle_object(self, op: str, body: dict[str, Any]) -> Any:
        """Answer one Dict, Queue or Volume op of code in a container."""
        ...

    def volume_path(self, name: str) -> str:
        """The host folder of a named volume (raises NotFoundError)."""
        ...

    async def handle_sandbox(self, op: str, body: dict[str, Any], app: str) -> Any:
        """Answer one sandbox op of code in a container of ``app`` (its own app's
        sandboxes only)."""
        ...

    def durable_spawns(self) -> DurableSpawns | None:
        """Where containers' spawns are stored (None: nowhere yet)."""
        ...

    def find_pool(self, namespace: str, name: str, parameters: bytes) -> Pool | None:
        """The pool of a class's parameters first used inside a container (see
        :attr:`ControlPlane.pool_finder`)."""
        ...

    def bundle(self, digest: str) -> bytes | None:
        """The bytes of code bundle ``digest`` (None: no such bundle)."""
        ...

    def volumes_shared(self) -> bool:
        """Whether volume folders are on a path every node mounts (``--volume-root``)."""
        ...


class ControlPlane:
    """Pools of containers for one running app.

    Args:
        backend: where containers run.
        host: where its containers' secrets, objects, volumes and stored spawns are
            found (a server); None: nowhere.
        clock: the time source the pools' autoscaling sees.
    """

    def __init__(
        self,
        backend: Backend,
        host: Host | None = None,
        clock: Callable[[], float] = time.monotonic,
        tls: tuple[str, str] | None = None,
    ) -> None:
        self.backend = backend
        #: The server's certificate and key files: containers that connect over TCP do
        #: with TLS, checking the certificate (given to them) before they send a token.
        self._tls = tls
        self._pin = ""
        self._clock = clock
        #: What its pools and containers publish (see control.events).
        self.events = EventBus()
        self._tally = ContainerTally(self.events)
        self._on_output = self.events.channel(ContainerOutput)
        backend.on_output = self._output
        backend.fetch = self.fetch
        #: The secret each container's own token is derived from (never given to one).
        self._secret = secrets.token_urlsafe(32)
        self._dir = ""
        self.address = ""
        self._server: asyncio.Server | None = None
        self._pools: dict[str, Pool] = {}
        #: Pools being stopped by remove_pool (their fork server must outlive them).
        self._stopping: set[Pool] = set()
        #: The namespace of each pool key: calls from its containers resolve names in it.
        self._namespaces: dict[str, str] = {}
        ledger = Ledger(backend.machines(), backend.elastic)
        want = backend.want if backend.elastic else None  # only a cluster adds machines
        self.budget = ContainerBudget(settings.max_containers(), ledger, want)
        backend.on_nodes = self.budget.set_nodes
        self.scheduler = Scheduler()
        self._connections: set[FramedProtocol] = set()
        #: Each connected container's connection, by its id (for ``exec_in``).
        self._attached: dict[str, _Connection] = {}
        self._stopped = False
        self._images: dict[Recipe, asyncio.Future[Environment]] = {}
        #: Who watches each build in progress, beside this process's stdout.
        self._build_watchers: dict[Recipe, list[BuildLog]] = {}
        self._host = host

    @property
    def secret_lookup(self) -> Lookup | None:
        """Where named secrets are found (a server's store); None: nowhere."""
        return None if self._host is None else self._host.secret_values

    @property
    def objects(self) -> ObjectHandler | None:
        """Answers the Dict, Queue and Volume ops of code in containers."""
        return None if self._host is None else self._host.handle_object

    @property
    def host(self) -> Host | None:
        """Who hosts this control plane (a server), if anyone."""
        return self._host

    @property
    def volume_lookup(self) -> Callable[[str], str] | None:
        """The host folder of a named volume (raises NotFoundError); None: no volumes."""
        return None if self._host is None else self._host.volume_path

    @property
    def spawns(self) -> DurableSpawns | None:
        """Keeps spawns made by code in containers by id (a server's store); None: their
        spawns run as plain calls, and ``from_id`` finds none of them."""
        return None if self._host is None else self._host.durable_spawns()

    @property
    def pool_finder(self) -> PoolFinder | None:
        """Creates the pool a container names that does not exist yet (a class object
        first used inside a container): given the caller's pool namespace, the class
        and its pickled parameters, the pool, or None for no such class."""
        return None if self._host is None else self._host.find_pool

    async def start(self) -> None:
        """Listen for containers. Returns once the socket accepts connections."""
        await self.backend.open()
        self._dir = run_dir.create()
        tls = None
        if settings.container_transport() == "tcp" or not self.backend.one_machine:
            where = transport.tcp_address(self.backend.host, 0)
            if self._tls is not None:
                tls = transport.server_tls(*self._tls)
                self._pin = transport.leaf_certificate(self._tls[0])
        else:
            where = os.path.join(self._dir, "control.sock")
        self._server, self.address = await transport.listen(where, self._accept, tls)
        self.backend.control_address = self.address

    def add_pool(
        self, spec: FunctionSpec, code: CodeRef, key: str | None = None, label: str = ""
    ) -> Pool:
        """Create the pool of ``spec`` under ``key`` (default: the function's name) and
        start its warm containers and its schedule.

        A key ``"app.v3.square"`` puts the pool in namespace ``"app.v3."``: when code
        in its containers calls function ``"cube"``, the call goes to ``"app.v3.cube"``.
        A pool of that key that exists already is returned as it is (pools of class
        parameter sets are declared as callers first use them). ``label`` (default: the
        key) starts its containers' output lines.
        """
        key = key or spec.name
        if key in self._pools:
            return self._pools[key]
        self.budget.ledger.check(spec.resources, spec.name)
        env = secrets_env(spec.secrets, self.secret_lookup)
        if spec.volumes:
            env["SHOAL_VOLUMES"] = json.dumps(self._volume_folders(spec))
        environment = self._environment(spec)
        if environment is not None:  # the caller's packages must not leak into the image
            code = dataclasses.replace(code, sys_path=user_paths(code.sys_path))
        pool = Pool(
            spec,
            code,
            self.backend,
            self._launch,
            self._clock,
            self.budget,
            prefix=key,
            label=label,
            environment=environment,
            env=env,
            events=self.events,
            tally=self._tally,
        )
        self.budget.add_reclaimer(pool, pool.give_idle)
        self._pools[key] = pool
        self._namespaces[key] = key[: len(key) - len(spec.name)] if key.endswith(spec.name) else ""
        pool.start()
        if spec.schedule is not None:
            self.scheduler.add(key, pool, spec.schedule)
        return pool

    async def prepare(self, specs: list[FunctionSpec], log: BuildLog | None = None) -> None:
        """Get the pools of ``specs`` ready to be added: every named secret exists, every
        volume exists (created if it may be), then every image is built (checks first, so
        a missing secret is reported before a long build). ``log`` hears the lines of
        each build this waits for (a remote caller's terminal).

        Raises:
            NotFoundError: a named secret or volume does not exist.
            ImageBuildError: an image could not be built.
        """
        for spec in specs:
            secrets_env(spec.secrets, self.secret_lookup)
        for spec in specs:
            shared = self._host is not None and self._host.volumes_shared()
            if spec.volumes and not self.backend.one_machine and not shared:
                raise InvalidError(
                    f"{spec.name} has volumes, and its containers run on a cluster: start the "
                    "server with --volume-root on a folder every node mounts (NFS, say), so "
                    "nothing is written to one node's disk alone"
                )
            for _, name, create in spec.volumes:
                if self.objects is None:
                    raise NotFoundError(f"{spec.name} has volumes; this control plane keeps none")
                await self.objects("volume_open", {"name": name, "create": create})
        for spec in specs:
            await self.build_image(spec.image, log)

    async def build_image(self, recipe: Recipe | None, log: BuildLog | None = None) -> None:
        """Build ``recipe`` (once per control plane; a failed build is tried again on
        the next call). :meth:`add_pool` needs the image of its spec built. Every line
        goes to this process's stdout, and to ``log`` while this call waits.

        Raises:
            ImageBuildError: a step failed.
        """
        if recipe is None:
            return
        task = self._images.get(recipe)
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            watchers = self._build_watchers[recipe] = []

            def fan_out(line: str) -> None:
                print_line(line)
                for watcher in list(watchers):
                    watcher(line)

            task = asyncio.ensure_future(self.backend.build_image(recipe, fan_out))
            task.add_done_callback(lambda _: self._unwatch_build(recipe, watchers))
            self._images[recipe] = task
        watching = self._build_watchers.get(recipe) if log is not None else None
        if watching is not None and log is not None:
            watching.append(log)
        try:
            await asyncio.shield(task)
        finally:
            if watching is not None and log in watching:
                watching.remove(log)

    def _unwatch_build(self, recipe: Recipe, watchers: list[BuildLog]) -> None:
        if self._build_watchers.get(recipe) is watchers:  # not a later build's
            del self._build_watchers[recipe]

    def _volume_folders(self, spec: FunctionSpec) -> dict[str, str]:
        """Where each of ``spec``'s volumes is on this machine, by its path in containers.

        Raises:
            NotFoundError: a volume does not exist, or nothing here keeps volumes.
        """
        if self.volume_lookup is None:
            raise NotFoundError(f"{spec.name} has volumes, and this control plane keeps none")
        return {path: self.volume_lookup(name) for path, name, _ in spec.volumes}

    def _environment(self, spec: FunctionSpec) -> Environment | None:
        return self.environment(spec.image, spec.name)

    def environment(self, recipe: Recipe | None, user: str) -> Environment | None:
        """The built environment of ``recipe`` (None: no image), for ``user``'s message.

        Raises:
            ExecutionError: it is not built (:meth:`build_image` first).
        """
        if recipe is None:
            return None
        task = self._images.get(recipe)
        if task is None or not task.done() or task.cancelled() or task.exception() is not None:
            raise ExecutionError(f"the image of {user} is not built (prepare first)")
        return task.result()

    def pool(self, key: str) -> Pool:
        """The pool under ``key``."""
        return self._pools[key]

    def find(self, namespace: str, name: str, parameters: bytes = b"") -> Pool | None:
        """The pool that code in namespace ``namespace`` means by function or class
        ``name`` (an object of it, for ``parameters``), created through
        :attr:`pool_finder` if need be; None if there is no such function or class.

        Raises:
            Error: the pool cannot be created (its finder says why).
        """
        if not parameters:
            pool = self._pools.get(namespace + name)
            if pool is None and self._namespaces.get(name) == "":
                pool = self._pools.get(name)  # a pool of no app (a caller's own): not another app's
            if pool is not None:
                return pool
        return None if self.pool_finder is None else self.pool_finder(namespace, name, parameters)

    def pools(self) -> dict[str, Pool]:
        """Every pool, by key."""
        return dict(self._pools)

    async def fetch(self, kind: str, digest: str) -> bytes:
        """The bytes of what a launch names by digest: a code bundle (``kind="bundle"``).

        Raises:
            NotFoundError: no such bundle here (or a kind this control plane does not serve).
        """
        data = self._host.bundle(digest) if self._host is not None and kind == "bundle" else None
        if data is None:
            raise NotFoundError(f"no {kind} {digest[:12]} to fetch from this control plane")
        return data

    def _output(self, container_id: str, stream: str, lines: list[str]) -> None:
        """The backend relays lines a container wrote: publish them."""
        if self._on_output:
            function = container_id.rpartition("-c")[0]
            texts, inputs = unmarked(lines)
            self._on_output.publish(
                ContainerOutput(function, container_id, stream, texts, self._clock(), inputs)
            )

    async def remove_pool(self, key: str, reason: StopReason = "stop") -> None:
        """Stop the pool under ``key`` and forget it (its schedule stops too);
        ``reason`` is why its containers stop (``"redeploy"``: a new version replaced it)."""
        pool = self._pools.pop(key, None)
        self._namespaces.pop(key, None)
        if pool is None:
            return
        self.scheduler.remove(key)
        self.budget.remove_reclaimer(pool)
        self._stopping.add(pool)
        try:
            await pool.stop(reason)
        finally:
            self._stopping.discard(pool)
            self._tally.forget(key)
        others = [*self._pools.values(), *self._stopping]
        if all(other.preload != pool.preload for other in others):
            self.backend.release(pool.preload)  # its fork server has no one left to serve

    async def stop(self) -> None:
        """Stop every pool and container, close the socket, remove the directory."""
        self.scheduler.stop()
        self._stopped = True
        await asyncio.gather(*(pool.stop() for pool in self._pools.values()))
        await self.backend.close()
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _launch(self, container_id: str, label: str, grant: Grant | None) -> ContainerLaunch:
        env = {"SHOAL_MOUNT_ROOT": os.path.join(self._dir, "roots")}
        if self.spawns is not None:
            env["SHOAL_STORED_SPAWNS"] = "1"
        if self._pin:
            env["SHOAL_CONTROL_CERT"] = self._pin  # public: what the container checks
        if grant is not None and grant.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(index) for index in grant.gpus)
        return ContainerLaunch(
            container_id=container_id,
            label=label,
            address=self.address,
            token=self.container_token(container_id),
            env=env,
            node=grant.node if grant is not None else "",
            grant=grant,
        )

    def exec_in(
        self,
        container_id: str,
        argv: list[str],
        timeout: float,
        on_output: Callable[[int, bytes], None],
        on_done: Callable[[int | None], None],
    ) -> None:
        """Run ``argv`` inside container ``container_id`` (``shoal container exec``):
        ``on_output(fd, data)`` as it writes, then ``on_done(code)`` once, with None when
        the container went first.

        Raises:
            NotFoundError: no container of that id is connected.
        """
        connection = self._attached.get(container_id)
        if connection is None:
            raise NotFoundError(f"no running container {container_id!r}")
        connection.exec(argv, timeout, on_output, on_done)

    def container_token(self, container_id: str) -> str:
        """The token container ``container_id`` proves itself with: its own, issued for its
        launch (an HMAC of its id under this control plane's secret), so a container
        holds neither that secret nor another container's token and cannot pose as one."""
        mac = hmac.new(self._secret.encode(), container_id.encode(), hashlib.sha256)
        return mac.hexdigest()

    def _accept(self) -> FramedProtocol:
        return _Connection(self).protocol

    def _route(
        self, hello: Hello, protocol: FramedProtocol
    ) -> tuple[Pool, ContainerHandle, str] | None:
        """The pool and container a Hello proves itself to be, or ``None`` to refuse it."""
        if not (isinstance(hello.token, str) and isinstance(hello.container_id, str)):
            return None  # a malformed hello: refused like a wrong token
        if not hmac.compare_digest(
            hello.token.encode(), self.container_token(hello.container_id).encode()
        ):
            return None
        for key, pool in self._pools.items():
            if pool.owns(hello.container_id):
                handle = pool.attach(hello.container_id, protocol)
                return None if handle is None else (pool, handle, self._namespaces[key])
        return None


class ContainerIdentity:
    """What a container's code reaches with its token: its own app's functions (of the
    version it runs), spawns and stored calls, and nothing of any other app."""

    def __init__(self, control: ControlPlane, handle: ContainerHandle, namespace: str) -> None:
        self._control = control
        self._handle = handle
        self._namespace = namespace
        #: The app this container's pool belongs to (None: a pool of no app).
        self.app = app_of(namespace)

    def _own(self, app: str) -> None:
        """Refuse ``app`` unless it is this container's own ("" names it too)."""
        if app and app != self.app:
            raise NotFoundError(f"no app {app!r} for code in this container")

    def pool(self, app: str, function: str, parameters: bytes) -> Pool:
        self._own(app)
        pool = self._control.find(self._namespace, function, parameters)
        if pool is None:
            raise ExecutionError(f"no function {function!r} in the running app")
        return pool

    def spawns(self, app: str) -> tuple[DurableSpawns, str]:
        spawns = self._control.spawns
        if spawns is None or self.app is None:
            raise ExecutionError("this control plane keeps no spawns by id")
        self._own(app)
        return spawns, self.app

    def parent(self, input_id: str) -> InputRecord | None:
        return self._handle.running.get(input_id)

    def waits_on(self, object_id: str) -> DurableSpawns:
        spawns = self._control.spawns
        if spawns is None:
            raise ExecutionError("this control plane keeps no function calls by id")
        self.check_own_call(spawns, object_id)
        return spawns

    def check_own_call(self, spawns: DurableSpawns, object_id: str) -> None:
        """A container's token reaches its own app's function calls only.

        Raises:
            NotFoundError: ``object_id`` is not a call of this container's app (said as
                for a call that does not exist: another app's ids are not confirmed).
        """
        if self.app is None or spawns.app_of(object_id) != self.app:
            raise NotFoundError(f"no function call {object_id!r} in this app")


class _Connection:
    """One container's connection: refuses everything until a valid Hello, then serves
    its inputs' messages to its pool, and its code's calls through an
    :class:`~shoal.control.intake.Intake`, as a client's are."""

    def __init__(self, control: ControlPlane) -> None:
        self._control = control
        self._bound: tuple[Pool, ContainerHandle] | None = None
        self._identity: ContainerIdentity | None = None
        self._intake: Intake | None = None
        #: Object ops being answered (cancelled if the container goes).
        self._tasks: set[asyncio.Task[None]] = set()
        #: Commands running in it for ``exec_in``: what their output and end go to.
        self._execs: dict[int, tuple[Callable[[int, bytes], None], Callable[[int | None], None]]]
        self._execs = {}
        self._exec_ids = itertools.count(1)
        # Until the peer has authenticated, accept only a small first frame, and only
        # for a while: a peer that never says hello is closed, not kept forever.
        self.protocol = FramedProtocol(self._on_message, self._on_lost, FRAME_OVERHEAD)
        control._connections.add(self.protocol)
        self._deadline: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            settings.handshake_timeout(), self._handshake_expired
        )
        if control._stopped:
            self.protocol.abort()  # accepted as the control plane stops: refused at once

    def _handshake_expired(self) -> None:
        self._deadline = None
        if self._bound is None:
            self.protocol.abort()

    def _on_message(self, message: Message) -> None:
        if self._bound is not None:
            pool, handle = self._bound
            if isinstance(message, CALLS) and self._intake is not None:
                self._intake.take(message)  # its code calls: as a client's calls are taken
            elif isinstance(message, Request):
                self._request(message)
            elif isinstance(message, ExecOutput | ExecDone):
                self._exec_heard(message)
            else:  # its inputs' outputs, items and credit: the pool's
                pool.on_message(handle, message)
            return
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        found = self._control._route(message, self.protocol) if isinstance(message, Hello) else None
        if found is None:
            self.protocol.abort()  # nothing more is read from a peer that did not prove itself
            return
        pool, handle, namespace = found
        self._bound = (pool, handle)
        self._control._attached[handle.container_id] = self
        self._identity = ContainerIdentity(self._control, handle, namespace)
        self._intake = Intake(self._identity, self.protocol.send, self.protocol.abort)
        self.protocol.parser.max_frame = settings.max_payload_bytes() + FRAME_OVERHEAD

    def exec(
        self,
        argv: list[str],
        timeout: float,
        on_output: Callable[[int, bytes], None],
        on_done: Callable[[int | None], None],
    ) -> None:
        """Run ``argv`` in this container (see :meth:`ControlPlane.exec_in`)."""
        ident = next(self._exec_ids)
        self._execs[ident] = (on_output, on_done)
        self.protocol.send(Exec(ident, list(argv), timeout))

    def _exec_heard(self, message: ExecOutput | ExecDone) -> None:
        """Output or the end of a command this control plane asked for; anything else (an
        id it never asked for, fields of the wrong types) is ignored: it comes from code
        this process does not trust."""
        found = self._execs.get(message.exec_id) if isinstance(message.exec_id, int) else None
        if found is None:
            return
        on_output, on_done = found
        if isinstance(message, ExecOutput):
            if message.fd in (1, 2) and isinstance(message.data, bytes):
                on_output(message.fd, message.data)
        elif isinstance(message.code, int):
            del self._execs[message.exec_id]
            on_done(message.code)

    def _request(self, message: Request) -> None:
        """User code in this container uses a Dict, Queue or Volume, or cancels a stored
        call: answer from the object store (or the spawns)."""
        task = asyncio.get_running_loop().create_task(self._answer(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, message: Request) -> None:
        try:
            op, spawns, objects = message.op, self._control.spawns, self._control.objects
            body = msgpack.unpackb(message.body, raw=False) if message.body else {}
            if not isinstance(body, dict):
                raise InvalidError("a request body must be a map")
            result: Any
            if op in ("call_cancel", "call_graph") and spawns is not None:
                assert self._identity is not None  # bound before any request is read
                self._identity.check_own_call(spawns, str(body.get("object_id")))
                result = call_op(spawns, op, str(body.get("object_id")))
            elif op == "fetch":
                result = await self._fetch(body)
            elif objects is not None and op.startswith(("dict_", "queue_", "volume_")):
                result = await objects(op, body)
            elif op.startswith("sandbox_") and self._control.host is not None:
                assert self._identity is not None  # bound before any request is read
                if not self._identity.app:
                    raise InvalidError("sandboxes belong to an app; this container has none")
                result = await self._control.host.handle_sandbox(op, body, self._identity.app)
            else:
                raise InvalidError(f"{op!r} is not available to code inside a container")
            reply = Reply(message.request_id, True, msgpack.packb(result, use_bin_type=True))
        except Exception as exc:
            error = {"kind": type(exc).__name__, "message": str(exc)}
            reply = Reply(message.request_id, False, msgpack.packb(error, use_bin_type=True))
        self.protocol.send(reply)

    async def _fetch(self, body: dict[str, Any]) -> bytes:
        """The code bundle this container's own function runs (the one its Load named):
        a container's token fetches nothing else, so it learns no other app's code.

        Raises:
            NotFoundError: ``body`` names another bundle, or a kind that is not a bundle.
        """
        kind, digest = body.get("kind"), body.get("digest")
        own = self._bound[0].preload.bundle if self._bound is not None else ""
        if kind != "bundle" or not isinstance(digest, str) or not own or digest != own:
            raise NotFoundError(f"no {kind} {str(digest)[:12]} for this container to fetch")
        return await self._control.fetch("bundle", digest)

    def _on_lost(self, exc: BaseException | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._intake is not None:
            self._intake.lost()  # its calls have no one to answer to
        for task in self._tasks:
            task.cancel()
        self._control._connections.discard(self.protocol)
        execs, self._execs = self._execs, {}
        for _, on_done in execs.values():
            on_done(None)  # the container went, and its commands with it
        if self._bound is not None:
            pool, handle = self._bound
            if self._control._attached.get(handle.container_id) is self:
                del self._control._attached[handle.container_id]
            pool.on_disconnect(handle)


def print_line(line: str) -> None:
    """Show one line of an image build where this process's operator watches."""
    log.say(line, component="image", stream=sys.stdout)
