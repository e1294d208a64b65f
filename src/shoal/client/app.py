"""``shoal.App``: registers functions and entrypoints, and runs them.

An app is a namespace of functions. ``with app.run():`` runs it for the block,
with one pool per function (warm containers start right away), and tears
everything down on exit, containers included. ``shoal run`` does the same
around a ``@app.local_entrypoint()``.

Where it runs: as an ephemeral app (:func:`shoal.client.deployed.run_ephemeral`) on
the server this process is told to use, or finds running on this machine
(:func:`shoal.client.target.find_target`); with none, on the embedded server
(:mod:`shoal.server.embedded`), started in this process for as long as an app runs on
it. Either way the handles reach it only through the client connection.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import sys
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from shoal.bridge import run_sync
from shoal.client.cls import Cls
from shoal.client.decorators import batch_size_of, concurrency_of
from shoal.client.deployed import DeployedApp, run_ephemeral
from shoal.client.function import Function
from shoal.client.image import Image
from shoal.client.map import MapProgress
from shoal.client.options import ignored_placement, secret_specs
from shoal.client.output import live_status, output_enabled
from shoal.client.remote import ChannelConnection
from shoal.client.secret import Secret
from shoal.client.server_pool import ServerPool
from shoal.client.target import Target, find_target, hold_embedded, release_embedded
from shoal.client.user_module import alias_main, code_ref
from shoal.client.volume import Volume
from shoal.client.volume import mounts as volume_mounts
from shoal.client.web import web_spec
from shoal.context import CallChannel
from shoal.context import channel as call_channel
from shoal.exception import ConnectionError, ExecutionError, InvalidError
from shoal.spec.function import UNSET, CodeRef, FunctionSpec, Retries, Scaling
from shoal.spec.resources import Resources
from shoal.spec.schedule import Cron, Period
from shoal.spec.secrets import SecretSpec

if TYPE_CHECKING:
    from shoal.gateway.server import Served

P = ParamSpec("P")
R = TypeVar("R")
E = TypeVar("E", bound=Callable[..., Any])
T = TypeVar("T")


class _FunctionDecorator:
    """What ``app.function(...)`` returns: applies the options to one function."""

    def __init__(self, app: App, options: dict[str, Any]) -> None:
        self._app = app
        self._options = options

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]]) -> Function[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> Function[P, R]: ...

    def __call__(self, fn: Callable[..., Any]) -> Function[Any, Any]:
        return self._app._register(fn, **self._options)


def _pick(name: str, value: Any, old_name: str, old_value: Any, default: Any) -> Any:
    """Resolve an option that Modal also spells the older way."""
    if value is not UNSET and old_value is not UNSET:
        raise InvalidError(f"give {name} or its older spelling {old_name}, not both")
    if value is not UNSET:
        return value
    return default if old_value is UNSET else old_value


def _check_no_arguments(fn: Callable[..., Any], name: str) -> None:
    """A scheduled function is called with no arguments: refuse one that needs some."""
    try:
        inspect.signature(fn).bind()
    except TypeError:
        raise InvalidError(f"{name} has a schedule, so it must take no arguments") from None
    except ValueError:
        pass  # no signature to check (a builtin): let it run


def _tell_waiting(inputs: int) -> None:
    print(
        f"waiting for {inputs} input{'s' if inputs != 1 else ''} to finish; Ctrl-C stops them",
        file=sys.stderr,
        flush=True,
    )


class _Handles:
    """What the app's own handles see of it (``shoal.client.function.Owner``)."""

    def __init__(self, app: App) -> None:
        self._app = app

    def web_url(self, name: str) -> str | None:
        on_server = self._app._on_server
        if on_server is not None and (url := on_server.web_url(name)) is not None:
            return url
        served = self._app._served
        if served is None:
            return None
        return served.origin_url(name) or served.url_for(name)

    def pool(self, name: str) -> ServerPool:
        return self._app._pool(name)

    def track(
        self, progress: MapProgress, chunks: AsyncIterator[list[Any]]
    ) -> AsyncIterator[list[Any]]:
        return self._app._track(progress, chunks)

    def declare(self, spec: FunctionSpec, code: Callable[[], CodeRef]) -> None:
        self._app._declare(spec, code)


class App:
    """A named set of functions that run in autoscaling pools of containers."""

    def __init__(
        self,
        name: str | None = None,
        *,
        image: Image | None = None,
        secrets: Sequence[Secret] = (),
        **_: Any,
    ) -> None:
        if image is not None and not isinstance(image, Image):
            raise InvalidError(f"image={image!r}: must be a shoal.Image")
        self.name = name
        #: The image of the app's functions that name none of their own.
        self.image = image
        #: Secrets every function of the app gets, before its own.
        self.secrets = secret_specs(secrets)
        self._functions: dict[str, Function[Any, Any]] = {}
        self._classes: dict[str, Cls[Any]] = {}
        #: Every pool the app runs: its spec and how to find its code, by pool name.
        self._declared: dict[str, tuple[FunctionSpec, Callable[[], CodeRef]]] = {}
        self._lock = threading.Lock()
        self._entrypoints: dict[str, Callable[..., Any]] = {}
        #: Pools as code in a container reaches them, by name (in a container only).
        self._remote_pools: dict[str, ServerPool] = {}
        self._progress: list[MapProgress] = []
        #: The gateway serving this app's web endpoints, while one does.
        self._served: Served | None = None
        self._handles = _Handles(self)
        #: The ephemeral app this app runs as on a server, while it does.
        self._on_server: DeployedApp | None = None
        #: Its id on a server, when it was found with :meth:`lookup`.
        self._app_id: str | None = None

    @staticmethod
    def lookup(name: str, *, create_if_missing: bool = False, **_: Any) -> App:
        """The app ``name`` on the server this process uses; with none, on the embedded
        server in this process, which is then held for the rest of the process's life (as
        named Dicts and Queues are).

        With ``create_if_missing`` an app that does not exist is created, empty: on a
        server, as a deployed app with no functions (``shoal app list`` shows it); on the
        embedded server, as an app of this process. Its functions are reached with
        ``shoal.Function.from_name(name, ...)``; ``app.app_id`` names it.

        Raises:
            NotFoundError: no app of that name exists and ``create_if_missing`` is off.
            ConnectionError, AuthError: a server is configured but cannot be used.
        """
        from shoal.client.connection import connect
        from shoal.client.target import embedded_target

        async def find() -> Any:
            target = find_target()
            if target is None:
                await hold_embedded()  # never released: it lives as long as the process
                target = embedded_target()
            connection = await connect(target)
            return await connection.request("app_lookup", app=name, create=create_if_missing)

        found = App(name)
        found._app_id = run_sync(find())["app_id"]
        return found

    @property
    def app_id(self) -> str | None:
        """The app's id on its server: a looked-up app's, or while it runs, its ephemeral
        id (``ap-...``); None otherwise."""
        if self._on_server is not None:
            return self._on_server.name
        return self._app_id

    # -- registration -------------------------------------------------------

    def function(
        self,
        *,
        serialized: bool = False,
        timeout: float = 300.0,
        retries: int | Retries | None = None,
        max_containers: int | Any | None = UNSET,
        min_containers: int | Any = UNSET,
        buffer_containers: int = 0,
        scaledown_window: float | Any = UNSET,
        allow_concurrent_inputs: int | None = None,
        keep_warm: int | Any = UNSET,
        concurrency_limit: int | Any | None = UNSET,
        container_idle_timeout: float | Any = UNSET,
        name: str | None = None,
        schedule: Period | Cron | None = None,
        cpu: float | tuple[float, float] | None = None,
        memory: int | tuple[int, int] | None = None,
        gpu: str | None = None,
        resources: Mapping[str, float] | None = None,
        region: str | Sequence[str] | None = None,
        cloud: str | None = None,
        image: Image | None = None,
        secrets: Sequence[Secret] = (),
        volumes: Mapping[str, Volume] | None = None,
    ) -> _FunctionDecorator:
        r"""Register the decorated function to run in its own autoscaling pool.

        Scaling options are those of DESIGN's table; ``keep_warm``,
        ``concurrency_limit``, ``container_idle_timeout`` and
        ``allow_concurrent_inputs`` are Modal's older spellings of
        ``min_containers``, ``max_containers``, ``scaledown_window`` and
        ``@shoal.concurrent(max_inputs=...)``. ``schedule`` (``shoal.Period`` or
        ``shoal.Cron``) runs the function, with no arguments, on that schedule while
        the app runs. ``cpu`` (cores), ``memory`` (MiB), each a request or a
        ``(request, limit)`` pair, and ``gpu`` (``"any"``, ``"A100"``, ``"H100:2"``)
        are what each container reserves on its machine; a memory limit is enforced.
        ``resources`` names custom resources a cluster's nodes offer
        (``{"node_a": 1}``): containers run only on nodes that have them.
        ``region`` and ``cloud`` are accepted and ignored, with a warning. ``image``
        (a ``shoal.Image``; default: the app's) is the environment containers run in;
        ``secrets`` (``shoal.Secret``\ s, with the app's) set variables in containers.

        Raises:
            InvalidError: an option is out of range, given twice under both its
                names, or the function cannot be located by a container.
        """
        options = {
            "serialized": serialized,
            "timeout": timeout,
            "retries": retries,
            "max_containers": _pick(
                "max_containers", max_containers, "concurrency_limit", concurrency_limit, None
            ),
            "min_containers": _pick("min_containers", min_containers, "keep_warm", keep_warm, 0),
            "buffer_containers": buffer_containers,
            "scaledown_window": _pick(
                "scaledown_window",
                scaledown_window,
                "container_idle_timeout",
                container_idle_timeout,
                60.0,
            ),
            "allow_concurrent_inputs": allow_concurrent_inputs,
            "name": name,
            "schedule": schedule,
            "resources": Resources.coerce(cpu=cpu, memory=memory, gpu=gpu, custom=resources),
            "image": image,
            "secrets": secret_specs(secrets),
            "volumes": volume_mounts(volumes, "@app.function"),
        }
        ignored_placement(region=region, cloud=cloud)
        return _FunctionDecorator(self, options)

    def _register(
        self, fn: Callable[..., Any], *, serialized: bool, **options: Any
    ) -> Function[Any, Any]:
        if isinstance(fn, Function):
            raise InvalidError(f"{fn.name} is already registered with @app.function")
        if not callable(fn) or isinstance(fn, type):
            raise InvalidError(f"@app.function needs a function, got {fn!r}; classes take @app.cls")
        spec = self._spec(fn, **options)
        web = web_spec(fn)
        if web is not None and spec.image is not None:  # what serving it needs in the image
            spec = dataclasses.replace(spec, image=spec.image.with_features(web["kind"]))
        if spec.schedule is not None:
            _check_no_arguments(fn, spec.name)
        if not serialized:
            code_ref(fn, serialized=False)  # fail now if a container could not find it
        handle: Function[Any, Any] = Function(self._handles, fn, spec, serialized=serialized)
        self._functions[spec.name] = handle
        self._declare(spec, lambda: code_ref(fn, serialized=serialized))
        return handle

    def _spec(
        self,
        target: Any,
        *,
        timeout: float,
        retries: int | Retries | None,
        allow_concurrent_inputs: int | None,
        name: str | None,
        schedule: Period | Cron | None = None,
        resources: Resources | None = None,
        image: Image | None = None,
        secrets: tuple[SecretSpec, ...] = (),
        volumes: tuple[tuple[str, str, bool], ...] = (),
        **scaling: Any,
    ) -> FunctionSpec:
        """The validated options of a function or class, from its decorators and arguments."""
        concurrency = concurrency_of(target)
        if concurrency is not None and allow_concurrent_inputs is not None:
            raise InvalidError("give @shoal.concurrent or allow_concurrent_inputs, not both")
        if concurrency is not None:
            scaling["max_inputs"] = concurrency.max_inputs
            scaling["target_inputs"] = concurrency.target_inputs
        elif allow_concurrent_inputs is not None:
            scaling["max_inputs"] = allow_concurrent_inputs
        elif (size := batch_size_of(target)) is not None:
            scaling["max_inputs"] = size  # a batch needs its inputs in the container at once
        fname = name or target.__name__
        if fname in self._functions or fname in self._classes:
            raise InvalidError(f"app already has a function or class named {fname!r}")
        if schedule is not None and not isinstance(schedule, Period | Cron):
            raise InvalidError(f"schedule={schedule!r}: must be a shoal.Period or shoal.Cron")
        image = image if image is not None else self.image
        if image is not None and not isinstance(image, Image):
            raise InvalidError(f"image={image!r}: must be a shoal.Image")
        return FunctionSpec(
            name=fname,
            scaling=Scaling(**scaling),
            timeout=timeout,
            retries=Retries.coerce(retries),
            schedule=schedule,
            resources=resources or Resources(),
            image=None if image is None else image.recipe,
            secrets=(*self.secrets, *secrets),
            volumes=volumes,
        )

    def cls(self, *, serialized: bool = False, **options: Any) -> Callable[[type[T]], Cls[T]]:
        """Register the decorated class: its ``@shoal.method()`` methods run in
        containers that share one instance, built once per container after its
        ``@shoal.enter()`` hooks. Takes the options of :meth:`function`.

        ``Cls(**parameters)`` gives an object whose methods run in the pool of
        that parameter set (each distinct set has its own).
        """
        if options.get("schedule") is not None:
            raise InvalidError("schedule= applies to functions, not classes")
        resolved = self.function(serialized=serialized, **options)._options

        def register(target: type[T]) -> Cls[T]:
            if not isinstance(target, type):
                raise InvalidError(f"@app.cls needs a class, got {target!r}")
            settings = dict(resolved)
            spec = self._spec(target, **{k: v for k, v in settings.items() if k != "serialized"})
            if not serialized:
                code_ref(target, serialized=False)
            handle = Cls(self._handles, target, spec, serialized=serialized)
            kinds = {web["kind"] for web in handle.web_methods.values()}
            if kinds and spec.image is not None:  # what serving them needs in the image
                handle.spec = dataclasses.replace(spec, image=spec.image.with_features(*kinds))
            self._classes[spec.name] = handle
            return handle

        return register

    def _declare(self, spec: FunctionSpec, code: Callable[[], CodeRef]) -> None:
        """Record a pool to create when the app runs (at once if it runs already)."""
        with self._lock:
            if spec.name in self._declared:
                return
            self._declared[spec.name] = (spec, code)
        if self._on_server is not None:
            self._on_server.declare(spec, code)

    @overload
    def local_entrypoint(self, fn: E, /) -> E: ...

    @overload
    def local_entrypoint(
        self, fn: None = None, /, *, name: str | None = None
    ) -> Callable[[E], E]: ...

    def local_entrypoint(
        self, fn: E | None = None, /, *, name: str | None = None
    ) -> E | Callable[[E], E]:
        """Mark a function that ``shoal run`` calls in the caller's process."""

        def register(f: E) -> E:
            self._entrypoints[name or f.__name__] = f
            return f

        return register(fn) if fn is not None else register

    @property
    def registered_functions(self) -> dict[str, Function[Any, Any]]:
        """The app's functions by name."""
        return dict(self._functions)

    @property
    def registered_classes(self) -> dict[str, Cls[Any]]:
        """The app's classes by name."""
        return dict(self._classes)

    @property
    def registered_entrypoints(self) -> dict[str, Callable[..., Any]]:
        """The app's local entrypoints by name."""
        return dict(self._entrypoints)

    # -- running ------------------------------------------------------------

    def declared(self) -> list[tuple[FunctionSpec, Callable[[], CodeRef]]]:
        """Every pool the app runs (its functions, variants and class objects): each
        one's spec and how to find its code."""
        with self._lock:
            return list(self._declared.values())

    @contextlib.contextmanager
    def run(self, *, detach: bool = False) -> Iterator[App]:
        """Run the app for the duration of the ``with`` block.

        Starts every function's pool (warm containers start at once), on the server
        this process uses if there is one (see the module docstring), else here; on
        exit, stops every container, whatever the block raised. ``detach`` lets the
        app's inputs finish after the block: on a server, there, after this process
        ends or leaves the block; with none, this process waits for them as it leaves
        the block (Ctrl-C stops them).

        Raises:
            ExecutionError: the app is already running.
            ConnectionError, AuthError: a server is configured but cannot be used.
        """
        if self.is_running:
            raise ExecutionError(f"app {self.name!r} is already running")
        alias_main()
        target = find_target()
        shown = live_status(self) if output_enabled() else contextlib.nullcontext()
        with self._run_on_server(target, detach), shown:
            yield self

    @contextlib.contextmanager
    def _run_on_server(self, target: Target | None, detach: bool) -> Iterator[None]:
        """Run the app as an ephemeral app on the server at ``target``, or with none, on
        the embedded server (:mod:`shoal.server.embedded`), started for it here."""
        embedded = target is None
        if target is None:
            target = run_sync(hold_embedded())
        try:
            on_server = run_sync(run_ephemeral(self, target, detach))
            self._on_server = on_server
            try:
                yield
            finally:
                self._on_server = None
                with contextlib.suppress(ConnectionError):
                    run_sync(on_server.finish(drain=detach))
                    if detach and embedded:  # its inputs run here: this process waits
                        run_sync(on_server.wait_drained(_tell_waiting))
        finally:
            if embedded:
                run_sync(release_embedded())

    @property
    def served(self) -> Served | None:
        """The gateway serving this app's web endpoints from this process, while one
        does (``shoal serve``, ``shoal run``); handles' ``web_url`` reads it."""
        return self._served

    @served.setter
    def served(self, served: Served | None) -> None:
        self._served = served

    @property
    def runs_on_server(self) -> DeployedApp | None:
        """The ephemeral app this app runs as on a server, while it does (its id is
        ``.name``); None when it runs on the embedded server or not at all."""
        on_server = self._on_server
        return None if on_server is None or on_server.connection.local else on_server

    @property
    def is_running(self) -> bool:
        """Whether ``app.run()`` is active."""
        return self._on_server is not None

    def _remote_pool(self, name: str, channel: CallChannel) -> ServerPool:
        """Pool ``name`` as code in a container reaches it: an object of a class is
        named by its class and parameters, since its pool may not exist yet."""
        pool = self._remote_pools.get(name)
        if pool is None:
            target, parameters = name, b""
            cls_name = name.partition("(")[0]  # an object's pool is "Cls(a=1, ...)"
            declared = self._declared.get(name)
            if cls_name != name and cls_name in self._classes and declared is not None:
                target, parameters = cls_name, declared[1]().parameters
            connection = ChannelConnection(channel)
            pool = ServerPool(connection, "", target, parameters, name)
            self._remote_pools[name] = pool
        return pool

    def _pool(self, name: str) -> ServerPool:
        if self._on_server is not None:
            return self._on_server.pool(name)
        channel = call_channel()
        if channel is not None:  # inside a container: call through it
            return self._remote_pool(name, channel)
        raise ExecutionError(
            f"app {self.name!r} is not running: call {name} inside `with app.run():` "
            "or through `shoal run`"
        )

    def _track(
        self, progress: MapProgress, chunks: AsyncIterator[list[Any]]
    ) -> AsyncIterator[list[Any]]:
        """Show ``progress`` in the status display while ``chunks`` is iterated."""

        async def tracked() -> AsyncIterator[list[Any]]:
            self._progress.append(progress)
            try:
                async for chunk in chunks:
                    yield chunk
            finally:
                self._progress.remove(progress)
                await chunks.aclose()  # type: ignore[attr-defined]

        return tracked()

    def progress(self) -> list[MapProgress]:
        """The maps running now (for the status display)."""
        return list(self._progress)

    def __repr__(self) -> str:
        return f"<shoal.App {self.name!r} functions={list(self._functions)}>"
