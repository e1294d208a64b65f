"""The handle a caller holds for a function: ``remote``, ``spawn``, ``map`` and friends.

``Function[P, R]`` is generic in the user's signature, so ``f.remote(...)`` is
type-checked against the function and returns its result type (the awaited type
for an ``async def``). Every method is one coroutine on the background loop
with a blocking face and an ``.aio`` face (:mod:`shoal.bridge`); all of
them go through the function's pool in the running app's control plane.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import queue
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from typing import Any, Generic, ParamSpec, Protocol, TypeVar

from shoal.bridge import (
    Starter,
    bridged,
    bridged_iter,
    call_on_loop,
    call_on_loop_async,
    launch_async,
    on_background_loop,
    run_async,
    run_sync,
    wait_on_loop,
    wait_on_loop_async,
)
from shoal.client.function_call import FunctionCall, StoredFunctionCall
from shoal.client.map import MapOptions, MapProgress, arg_tuples, known_length, map_outputs
from shoal.client.options import variant_options
from shoal.client.record import CallRecord, CallState
from shoal.client.server_pool import ServerPool
from shoal.client.user_module import code_ref
from shoal.exception import InputCancellation, InvalidError
from shoal.protocol import payload
from shoal.spec.function import UNSET, CodeRef, FunctionSpec, with_options
from shoal.spec.log_line import LogLine
from shoal.spec.stats import FunctionStats

P = ParamSpec("P")
R = TypeVar("R")


class Owner(Protocol):
    """What a handle needs of the app it belongs to: an ``App`` running here, or a
    deployed app on a server (:class:`~shoal.client.deployed.DeployedApp`)."""

    def web_url(self, name: str) -> str | None: ...

    def pool(self, name: str) -> ServerPool: ...

    def track(
        self, progress: MapProgress, chunks: AsyncIterator[list[Any]]
    ) -> AsyncIterator[list[Any]]: ...

    def declare(self, spec: FunctionSpec, code: Callable[[], CodeRef]) -> None: ...


class Function(Generic[P, R]):
    """A function registered on an app; call it with ``remote``, ``map``, ``spawn``…

    Created by ``@app.function(...)``; not constructed directly.
    """

    def __init__(
        self,
        owner: Owner,
        raw_f: Callable[..., Any] | None,
        spec: FunctionSpec,
        *,
        serialized: bool,
        method: str = "",
        is_generator: bool | None = None,
        web_name: str = "",
    ) -> None:
        self._owner = owner
        #: The name its web endpoint is served under, for a method (``Cls.method``).
        self._web_name = web_name or spec.name
        self._raw_f = raw_f
        self.spec = spec
        self.serialized = serialized
        #: The method of a class pool this handle calls ("" for a function).
        self.method = method
        if is_generator is None:
            is_generator = inspect.isgeneratorfunction(raw_f) or inspect.isasyncgenfunction(raw_f)
        self.is_generator = is_generator
        self.__name__ = getattr(raw_f, "__name__", method or spec.name)
        self.__qualname__ = getattr(raw_f, "__qualname__", self.__name__)
        self.__module__ = getattr(raw_f, "__module__", __name__)
        self.__doc__ = getattr(raw_f, "__doc__", None)

    @classmethod
    def from_name(cls, app_name: str, name: str) -> Function[..., Any]:
        """The function ``name`` of the deployed app ``app_name``, on the server this
        process uses (see :mod:`shoal.client.connection`), with the full calling API.

        Raises:
            NotFoundError: no such app, or it has no such function.
            ConnectionError: no server to ask.
        """
        from shoal.client.deployed import DeployedApp, lookup

        connection, info = run_sync(lookup(app_name, name, "function"))
        owner = DeployedApp(app_name, connection, web_urls={name: info.get("web_url")})
        spec = FunctionSpec(name=name)
        return Function(owner, None, spec, serialized=False, is_generator=bool(info["generator"]))

    @property
    def __shoal_raw_function__(self) -> Callable[..., Any]:
        """The undecorated function (what a container runs).

        Raises:
            InvalidError: a handle found by name has no function here.
        """
        if self._raw_f is None:
            raise InvalidError(f"{self.name} was found by name: its code is on the server")
        return self._raw_f

    @property
    def name(self) -> str:
        """The function's name within its app (``Cls(params).method`` for a method)."""
        return f"{self.spec.name}.{self.method}" if self.method else self.spec.name

    @property
    def web_url(self) -> str | None:
        """The URL of this web endpoint while its app is served (``shoal serve``/``run``,
        or deployed)."""
        return self._owner.web_url(self._web_name)

    def with_options(self, **options: Any) -> Function[P, R]:
        """This function with other options, as Modal's ``with_options``: ``cpu``,
        ``memory``, ``gpu``, ``resources`` (a cluster's custom resources, replacing the
        function's), ``timeout``, ``retries``, ``max_containers``,
        ``min_containers``, ``buffer_containers``, ``scaledown_window``, ``secrets``
        and ``volumes`` (these two replace the function's), ``env`` (variables added
        to its secrets); ``region``/``cloud`` are ignored with a warning.

        The variant runs in a pool of its own beside the original's.

        Raises:
            InvalidError: an unknown option or a bad value; a method handle (use
                ``Cls.with_options``).
        """
        if self.method:
            raise InvalidError(f"{self.name} is a method: use the class's with_options")
        spec = with_options(self.spec, **variant_options(self.spec.secrets, **options))
        raw, serialized = self._raw_f, self.serialized
        if raw is None:
            raise InvalidError(f"{self.name} was found by name: redeploy it with other options")
        variant: Function[P, R] = Function(self._owner, raw, spec, serialized=serialized)
        self._owner.declare(spec, lambda: code_ref(raw, serialized=serialized))
        return variant

    def get_web_url(self) -> str | None:
        """Modal's name for :attr:`web_url`."""
        return self.web_url

    def _pool(self) -> ServerPool:
        return self._owner.pool(self.spec.name)

    def _outcome(self, record: CallRecord) -> R:
        """Unpickle ``record``'s result, or raise its error."""
        if record.state is CallState.DONE:
            assert record.result is not None
            value: R = payload.loads(record.result, f"return value of {self.spec.name}")
            return value
        if record.state is CallState.CANCELLED:
            raise InputCancellation(f"{self.spec.name} (input {record.input_id}) was cancelled")
        assert record.error is not None
        raise record.error

    def _pickle_args(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        return payload.dumps((args, kwargs), f"arguments of {self.name}")

    def _check_kind(self, generator: bool) -> None:
        if self.is_generator and not generator:
            raise InvalidError(f"{self.name} is a generator: call it with remote_gen")
        if generator and not self.is_generator:
            raise InvalidError(f"{self.name} is not a generator: call it with remote")

    # -- single calls -----------------------------------------------------

    @property
    def remote(self) -> _Remote[P, R]:
        """Run the function in a container and return its result.

        ``f.remote(...)`` blocks; ``await f.remote.aio(...)`` awaits.

        Raises:
            SerializationError: the arguments cannot be pickled (nothing is queued).
            FunctionTimeoutError: the input ran past ``timeout``.
            ContainerCrashError: containers died under it until retries ran out.
            Exception: whatever the function raised, with the remote traceback as a note.
        """
        return _Remote(self)

    @property
    def remote_gen(self) -> _RemoteGen[P]:
        """Run a generator function in a container; iterate its values as they are yielded.

        ``for x in f.remote_gen(...)`` or ``async for x in f.remote_gen.aio(...)``.
        Stopping early cancels the input. A container that dies after the
        generator yielded is not retried (the values would repeat).
        """
        return _RemoteGen(self)

    @property
    def spawn(self) -> _Spawn[P, R]:
        """Queue one input and return at once with a :class:`FunctionCall` for it.

        ``f.spawn(...)`` or ``await f.spawn.aio(...)``.
        """
        return _Spawn(self)

    def _spawn_on_loop(self, data: bytes) -> FunctionCall[R]:
        pool = self._pool()
        finished = asyncio.Event()
        record = pool.submit(data, lambda _: finished.set(), self.method)
        return FunctionCall(pool, record, finished, self._outcome)

    async def _spawn_stored(self, pool: ServerPool, data: bytes) -> FunctionCall[R]:
        return self._stored_call(pool, await pool.spawn(data, self.method))

    def _stored_call(self, pool: ServerPool, object_id: str) -> FunctionCall[R]:
        return StoredFunctionCall(pool.connection, object_id, self.name)

    def local(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Call the function here, in this process (a coroutine for an ``async def``)."""
        return self.__shoal_raw_function__(*args, **kwargs)

    # -- maps -------------------------------------------------------------

    def _map_chunks(
        self,
        iterables: tuple[Iterable[Any], ...],
        *,
        star: bool,
        kwargs: dict[str, Any] | None,
        options: MapOptions,
    ) -> AsyncIterator[list[Any]]:
        self._check_kind(generator=False)
        progress = MapProgress(self.name, known_length(iterables))
        return self._owner.track(
            progress,
            map_outputs(
                self._pool(),
                self.method,
                arg_tuples(iterables, star),
                kwargs or {},
                options,
                self._outcome,
                progress,
            ),
        )

    @bridged_iter
    def map(
        self,
        *iterables: Iterable[Any],
        kwargs: dict[str, Any] | None = None,
        order_outputs: bool = True,
        return_exceptions: bool = False,
    ) -> AsyncIterator[list[R]]:
        """Run one input per item (``zip`` of ``iterables``); yield results as they come.

        Streams: the inputs are read as the map goes, never all at once.
        ``order_outputs=False`` yields results as they finish;
        ``return_exceptions=True`` yields errors as values instead of raising.
        """
        options = MapOptions(order_outputs, return_exceptions)
        return self._map_chunks(iterables, star=False, kwargs=kwargs, options=options)

    @bridged_iter
    def starmap(
        self,
        iterable: Iterable[Iterable[Any]],
        *,
        kwargs: dict[str, Any] | None = None,
        order_outputs: bool = True,
        return_exceptions: bool = False,
    ) -> AsyncIterator[list[R]]:
        """Like :meth:`map`, each item being the tuple of positional arguments."""
        options = MapOptions(order_outputs, return_exceptions)
        return self._map_chunks((iterable,), star=True, kwargs=kwargs, options=options)

    @bridged
    async def for_each(
        self,
        *iterables: Iterable[Any],
        kwargs: dict[str, Any] | None = None,
        ignore_exceptions: bool = False,
    ) -> None:
        """Run the map for its effects, discarding results (and errors if asked)."""
        options = MapOptions(False, ignore_exceptions)
        async for _ in self._map_chunks(iterables, star=False, kwargs=kwargs, options=options):
            pass

    @bridged
    async def spawn_map(
        self, *iterables: Iterable[Any], kwargs: dict[str, Any] | None = None
    ) -> None:
        """Queue one input per item (``zip`` of ``iterables``) and return without waiting
        for any result, as Modal's ``spawn_map``. On a deployed function each input is
        stored on the server before this returns.
        """
        self._check_kind(generator=False)
        data = [
            self._pickle_args(tuple(args), kwargs or {}) for args in zip(*iterables, strict=False)
        ]
        pool = self._pool()
        if pool.stores_spawns:
            for start in range(0, len(data), _SPAWNS_IN_FLIGHT):
                batch = data[start : start + _SPAWNS_IN_FLIGHT]
                await asyncio.gather(*(pool.spawn(d, self.method) for d in batch))
        elif data:
            pool.submit_many(data, _ignore_outcome, self.method)

    # -- scaling ----------------------------------------------------------

    @bridged
    async def update_autoscaler(
        self,
        *,
        min_containers: int | Any = UNSET,
        max_containers: int | Any | None = UNSET,
        buffer_containers: int | Any = UNSET,
        scaledown_window: float | Any = UNSET,
    ) -> None:
        """Change scaling parameters of the running function; they apply at once.

        The change lasts for this run of the app; the next run starts from the
        parameters the function was declared with.

        Raises:
            InvalidError: a value is out of range; nothing changes then.
        """
        given = {
            "min_containers": min_containers,
            "max_containers": max_containers,
            "buffer_containers": buffer_containers,
            "scaledown_window": scaledown_window,
        }
        changes = {key: value for key, value in given.items() if value is not UNSET}
        await self._pool().change_scaling(**changes)

    @bridged
    async def stats(self) -> FunctionStats:
        """Queued and running inputs and containers of this function, right now."""
        return await self._pool().fetch_stats()

    get_current_stats = stats

    @bridged
    async def get_logs(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        tail: int | None = None,
        search: str | None = None,
        container: str | None = None,
        input: str | None = None,
    ) -> list[LogLine]:
        """The lines this function's containers printed, oldest first, as
        ``shoal app logs APP --function NAME`` shows them: ``since``/``until`` are times
        (seconds since the epoch), ``tail`` keeps the last N, ``search`` keeps lines that
        contain it, ``container`` those of one container (its id or its end, ``-c3``),
        ``input`` those printed while one call ran (a ``FunctionCall``'s ``object_id``).
        A server keeps every line on disk; an embedded run keeps the last
        SHOAL_LOG_LINES of each function in memory.
        """
        return await self._pool().fetch_logs(
            since=since,
            until=until,
            tail=tail,
            search=search,
            container=container,
            input=input,
        )

    def __repr__(self) -> str:
        return f"<shoal.Function {self.spec.name}>"


#: Durable spawns ``spawn_map`` keeps waiting for their commit at once.
_SPAWNS_IN_FLIGHT = 1000


def _ignore_outcome(record: CallRecord) -> None:
    """``spawn_map`` keeps no handle: an outcome has no one to go to."""


class _Remote(Generic[P, R]):
    """``f.remote``: one input, both faces over the same start and outcome.

    Arguments are pickled and the result unpickled on the calling thread; the
    control plane's loop only queues the input and signals its end.
    """

    __slots__ = ("_function",)

    def __init__(self, function: Function[P, R]) -> None:
        self._function = function

    def _starter(self, pool: ServerPool, data: bytes) -> tuple[Starter, list[CallRecord]]:
        method = self._function.method
        submitted: list[CallRecord] = []

        def start(done: Callable[[], None]) -> Callable[[], None]:
            record = pool.submit(data, lambda _: done(), method)
            submitted.append(record)
            return lambda: pool.cancel(record)

        return start, submitted

    def _prepare(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[ServerPool, bytes]:
        function = self._function
        function._check_kind(generator=False)
        return function._pool(), function._pickle_args(args, kwargs)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        pool, data = self._prepare(args, kwargs)
        if not on_background_loop():
            record = pool.call_on_line(data, self._function.method)  # no hop through the loop
            if record is not None:
                return self._function._outcome(record)
        start, submitted = self._starter(pool, data)
        wait_on_loop(start)
        return self._function._outcome(submitted[0])

    async def aio(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """The same call, awaitable from any event loop."""
        start, submitted = self._starter(*self._prepare(args, kwargs))
        await wait_on_loop_async(start)
        return self._function._outcome(submitted[0])


class _Spawn(Generic[P, R]):
    """``f.spawn``: arguments pickled on the calling thread, one hop to queue the input."""

    __slots__ = ("_function",)

    def __init__(self, function: Function[P, R]) -> None:
        self._function = function

    def _data(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        self._function._check_kind(generator=False)
        return self._function._pickle_args(args, kwargs)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> FunctionCall[R]:
        data = self._data(args, kwargs)
        function = self._function
        pool = function._pool()
        if not on_background_loop():
            object_id = pool.spawn_on_line(data, function.method)  # no hop through the loop
            if object_id is not None:
                return function._stored_call(pool, object_id)
        if pool.stores_spawns:  # stored on the server before this returns
            return run_sync(function._spawn_stored(pool, data))
        return call_on_loop(lambda: function._spawn_on_loop(data))

    async def aio(self, *args: P.args, **kwargs: P.kwargs) -> FunctionCall[R]:
        """The same call, awaitable from any event loop."""
        data = self._data(args, kwargs)
        function = self._function
        pool = function._pool()
        if pool.stores_spawns:  # a future on the background loop, no task
            launch = functools.partial(pool.launch_spawn, data, function.method)
            return function._stored_call(pool, await launch_async(launch))
        return await call_on_loop_async(lambda: function._spawn_on_loop(data))


#: Marks the end of a generator's values in its queue.
_END: Any = object()


class _RemoteGen(Generic[P]):
    """``f.remote_gen``: one input whose yielded values stream back as they come."""

    __slots__ = ("_function",)

    def __init__(self, function: Function[P, Any]) -> None:
        self._function = function

    def _begin(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], put: Callable[[Any], None]
    ) -> tuple[ServerPool, Callable[[], Coroutine[Any, Any, CallRecord]]]:
        function = self._function
        function._check_kind(generator=True)
        data = function._pickle_args(args, kwargs)
        pool = function._pool()

        async def submit() -> CallRecord:
            return pool.submit(data, lambda _: put(_END), function.method, on_item=put)

        return pool, submit

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Iterator[Any]:
        values: queue.SimpleQueue[Any] = queue.SimpleQueue()
        pool, submit = self._begin(args, kwargs, values.put)
        record = run_sync(submit())
        return self._iterate(pool, record, values)

    def _iterate(
        self, pool: ServerPool, record: CallRecord, values: queue.SimpleQueue[Any]
    ) -> Iterator[Any]:
        what = f"value yielded by {self._function.name}"
        try:
            while (value := values.get()) is not _END:
                yield payload.loads(value, what)
            self._function._outcome(record)
        finally:
            if not record.done:
                run_sync(_cancel(pool, record))

    async def aio(self, *args: P.args, **kwargs: P.kwargs) -> AsyncIterator[Any]:
        """The same stream, from any event loop."""
        loop = asyncio.get_running_loop()
        values: asyncio.Queue[Any] = asyncio.Queue()

        def put(value: Any) -> None:
            loop.call_soon_threadsafe(values.put_nowait, value)

        pool, submit = self._begin(args, kwargs, put)
        record = await run_async(submit())
        what = f"value yielded by {self._function.name}"
        try:
            while (value := await values.get()) is not _END:
                yield payload.loads(value, what)
            self._function._outcome(record)
        finally:
            if not record.done:
                await run_async(_cancel(pool, record))


async def _cancel(pool: ServerPool, record: CallRecord) -> None:
    pool.cancel(record)
