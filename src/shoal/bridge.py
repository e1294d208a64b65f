"""One async implementation, two faces: blocking calls and ``.aio`` awaitables.

Every handle method is written once as a coroutine (or an async iterator of
chunks) that runs on a single background event loop, the loop the embedded
control plane lives on. :class:`Bridged` gives it a blocking ``__call__`` for
ordinary code and an ``aio`` form for code already inside an event loop::

    f.remote(1)              # blocks this thread until the result is in
    await f.remote.aio(1)    # awaits it from any event loop

The background loop is one daemon thread started on first use; it dies with
the process, and containers notice the closed connection and exit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import sys
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from shoal.exception import Error, ExecutionError

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
S = TypeVar("S")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
#: Whether a blocking call made on the background loop may run on ``_helper``.
_blocking_elsewhere = False
_helper: asyncio.AbstractEventLoop | None = None


def background_loop() -> asyncio.AbstractEventLoop:
    """The loop every Shoal coroutine runs on, started on first use."""
    global _loop
    with _lock:
        if _loop is None:
            _loop = _start_loop("shoal-control")
        return _loop


def use_loop(loop: asyncio.AbstractEventLoop, *, blocking_elsewhere: bool = False) -> None:
    """Make ``loop`` (already run by its owner) the loop Shoal's coroutines run on.

    A container calls it with its runtime's loop before user code loads, so user
    code's calls to other functions, Dicts and Queues are answered on the loop that
    reads the container's socket (one thread hop fewer each way); a container with
    async code then calls it with the loop that code runs on, so its ``.aio`` calls
    take no hop at all. ``blocking_elsewhere`` lets a blocking call made on ``loop``
    itself (an ``async def`` calling ``f.remote()``, as Modal allows) run on a helper
    loop while ``loop`` waits, instead of being refused; the container's socket is
    read elsewhere, so the answer still comes. (A loop started before, in a fork
    server's process, has no thread in this one.)
    """
    global _loop, _blocking_elsewhere
    with _lock:
        _loop = loop
        _blocking_elsewhere = blocking_elsewhere


def _blocking_loop() -> asyncio.AbstractEventLoop:
    """The loop a blocking call runs its work on: the background loop, or a helper
    when the caller is the background loop itself and that is allowed.

    Raises:
        ExecutionError: called on the background loop, where it would deadlock.
    """
    global _helper
    if not on_background_loop():
        return background_loop()
    if not _blocking_elsewhere:
        raise ExecutionError("a blocking Shoal call inside Shoal's own loop; use .aio")
    with _lock:
        if _helper is None:
            _helper = _start_loop("shoal-blocking")
        return _helper


def _start_loop(name: str) -> asyncio.AbstractEventLoop:
    started = threading.Event()
    loop = asyncio.new_event_loop()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(started.set)
        _run_forever(loop)

    threading.Thread(target=serve, name=name, daemon=True).start()
    started.wait()
    return loop


def _run_forever(loop: asyncio.AbstractEventLoop) -> None:
    """Run ``loop`` for the life of the process.

    asyncio lets a ``SystemExit`` or ``KeyboardInterrupt`` raised inside a task out
    of ``run_forever``, which would leave every later call waiting forever. Shoal
    never raises them on this loop (payloads that would are turned into errors),
    and should one still escape, the loop reports it and carries on.
    """
    while True:
        try:
            loop.run_forever()
            return
        except BaseException as exc:
            print(f"shoal: {exc!r} escaped the control loop; it keeps running", file=sys.stderr)


def on_background_loop() -> bool:
    """Whether the caller runs on Shoal's own loop (where blocking calls would deadlock)."""
    try:
        return asyncio.get_running_loop() is _loop
    except RuntimeError:
        return False


def run_sync(coro: Coroutine[Any, Any, R]) -> R:
    """Run ``coro`` on the background loop and block until it returns.

    Raises:
        ExecutionError: called from the background loop itself (it would deadlock),
            unless that may run elsewhere (see :func:`use_loop`).
    """
    try:
        loop = _blocking_loop()
    except ExecutionError:
        coro.close()
        raise
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result()
    except BaseException as exc:
        future.cancel()  # e.g. KeyboardInterrupt: stop the work we started
        if _for_the_user(exc):  # its frames on the loop are Shoal's, not the caller's
            raise exc.with_traceback(None)  # noqa: B904 - the same error, trimmed
        raise


def _for_the_user(exc: BaseException) -> bool:
    """Whether ``exc`` is the user's to read (a Shoal error, or the function's own raised
    in a container), rather than a fault whose frames on the loop say where it is."""
    if isinstance(exc, Error):
        return True
    return any("Remote traceback" in note for note in getattr(exc, "__notes__", ()))


async def run_async(coro: Coroutine[Any, Any, R]) -> R:
    """Await ``coro`` on the background loop from whatever loop the caller runs.

    Calls made from one loop in one of its turns cross to the background loop in
    one hop, and the results that come back in one turn of the background loop
    return in one hop (:class:`_Courier`): a thousand ``spawn.aio`` gathered at
    once cost two thread wake-ups, not two thousand.
    """
    if on_background_loop():
        return await coro
    result: R = await _courier().send(coro)
    return result


#: Work started on the background loop that reports through a callback instead of a
#: coroutine: called there with a future it must settle (no task, no coroutine).
Launcher = Callable[[asyncio.Future[Any]], None]


async def launch_async(launch: Launcher) -> Any:
    """:func:`run_async` for work that settles a future instead of running a coroutine:
    the same batched hops, and on the background loop only a future and a callback
    (a thousand gathered ``spawn.aio`` calls make no task there)."""
    if on_background_loop():
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        launch(future)
        return await future
    return await _courier().send(launch)


def _courier() -> _Courier:
    """The courier of the caller's loop, made on first use."""
    home = asyncio.get_running_loop()
    courier = _couriers.get(home)
    if courier is None:
        courier = _couriers[home] = _Courier(home)
    return courier


#: Work on its way (a coroutine, or a launcher), the future its caller awaits, and
#: (once started) its task or future on the background loop.
_Parcel = tuple[Coroutine[Any, Any, Any] | Launcher, asyncio.Future[Any], list[asyncio.Future[Any]]]


class _Courier:
    """Carries coroutines from one caller's loop (``home``) to the background loop and
    their outcomes back, a loop turn's worth per hop (see :func:`run_async`)."""

    def __init__(self, home: asyncio.AbstractEventLoop) -> None:
        self._home = home
        self._outbox: list[_Parcel] = []
        self._inbox: list[tuple[asyncio.Future[Any], asyncio.Future[Any]]] = []

    def send(self, work: Coroutine[Any, Any, Any] | Launcher) -> asyncio.Future[Any]:
        """Queue ``work`` (on the home loop); its outcome settles the returned future."""
        answer: asyncio.Future[Any] = self._home.create_future()
        started: list[asyncio.Future[Any]] = []  # the task, once the background loop has it
        answer.add_done_callback(functools.partial(_cancel_if_abandoned, started))
        if not self._outbox:
            self._home.call_soon(self._ship)
        self._outbox.append((work, answer, started))
        return answer

    def _ship(self) -> None:
        batch, self._outbox = self._outbox, []
        background_loop().call_soon_threadsafe(self._start, batch)

    def _start(self, batch: list[_Parcel]) -> None:
        loop = asyncio.get_running_loop()
        for work, answer, started in batch:  # on the background loop
            if asyncio.iscoroutine(work):
                task: asyncio.Future[Any] = asyncio.ensure_future(work)
            else:
                task = loop.create_future()
                try:
                    work(task)
                except BaseException as exc:
                    if not task.done():
                        task.set_exception(exc)
            task.add_done_callback(functools.partial(self._finished, answer))
            started.append(task)
            if answer.cancelled():  # abandoned before it started
                task.cancel()

    def _finished(self, answer: asyncio.Future[Any], task: asyncio.Future[Any]) -> None:
        if not self._inbox:
            task.get_loop().call_soon(self._return)
        self._inbox.append((task, answer))

    def _return(self) -> None:
        batch, self._inbox = self._inbox, []
        try:
            self._home.call_soon_threadsafe(_settle, batch)
        except RuntimeError:  # the caller's loop is closed: no one to answer
            for task, _ in batch:
                if not task.cancelled():
                    task.exception()  # retrieved: no "never retrieved" warning


def _settle(batch: list[tuple[asyncio.Future[Any], asyncio.Future[Any]]]) -> None:
    """On the caller's loop: copy each task's outcome to the future its caller awaits."""
    for task, answer in batch:
        if answer.done():
            if not task.cancelled():
                task.exception()
            continue
        if task.cancelled():
            answer.cancel()
        elif task.exception() is not None:
            answer.set_exception(task.exception())  # type: ignore[arg-type]
        else:
            answer.set_result(task.result())


def _cancel_if_abandoned(started: list[asyncio.Future[Any]], answer: asyncio.Future[Any]) -> None:
    """The caller stopped waiting (it was cancelled): stop the work too."""
    if answer.cancelled() and started:
        task = started[0]
        with contextlib.suppress(RuntimeError):
            task.get_loop().call_soon_threadsafe(task.cancel)


#: One courier per caller loop (gone with its loop).
_couriers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Courier] = (
    weakref.WeakKeyDictionary()
)


def _schedule(fn: Callable[[], R]) -> concurrent.futures.Future[R]:
    future: concurrent.futures.Future[R] = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:
            future.set_exception(exc)

    background_loop().call_soon_threadsafe(run)
    return future


def call_on_loop(fn: Callable[[], R]) -> R:
    """Run the plain function ``fn`` on the background loop; block for its result.

    One hop each way and no task: the cheapest way to touch loop-owned state
    (queue an input, say) from another thread.

    Raises:
        BaseException: whatever ``fn`` raised.
    """
    return fn() if on_background_loop() else _schedule(fn).result()


async def call_on_loop_async(fn: Callable[[], R]) -> R:
    """:func:`call_on_loop` for a caller on any event loop."""
    return fn() if on_background_loop() else await asyncio.wrap_future(_schedule(fn))


#: Work started on the background loop: called there with ``done``, which it must
#: call (on the loop) when the work finishes; returns a function that cancels it.
Starter = Callable[[Callable[[], None]], Callable[[], None]]


def _start_on_loop(start: Starter, future: concurrent.futures.Future[None]) -> Callable[[], None]:
    def done() -> None:
        if not future.done():
            future.set_result(None)

    try:
        return start(done)
    except BaseException as exc:
        future.set_exception(exc)
        return lambda: None


def wait_on_loop(start: Starter) -> None:
    """Run ``start`` on the background loop and block until it reports done.

    The cheapest round trip the bridge has: no task, no coroutine, and the
    waiting thread wakes the moment ``done`` is called. If this thread is
    interrupted (Ctrl-C), the work is cancelled on the loop.

    Raises:
        ExecutionError: called from the background loop itself (it would deadlock),
            unless that may run elsewhere (see :func:`use_loop`).
        BaseException: whatever ``start`` raised.
    """
    loop = _blocking_loop()
    future: concurrent.futures.Future[None] = concurrent.futures.Future()
    cancel: list[Callable[[], None]] = []
    loop.call_soon_threadsafe(lambda: cancel.append(_start_on_loop(start, future)))
    try:
        future.result()
    except BaseException:
        loop.call_soon_threadsafe(lambda: [c() for c in cancel])
        raise


async def wait_on_loop_async(start: Starter) -> None:
    """:func:`wait_on_loop` for a caller on any event loop."""
    loop = background_loop()
    future: concurrent.futures.Future[None] = concurrent.futures.Future()
    cancel: list[Callable[[], None]] = []
    if on_background_loop():
        cancel.append(_start_on_loop(start, future))
    else:
        loop.call_soon_threadsafe(lambda: cancel.append(_start_on_loop(start, future)))
    try:
        await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        loop.call_soon_threadsafe(lambda: [c() for c in cancel])
        raise


class Bridged(Generic[P, R]):
    """A coroutine function with a blocking face (``__call__``) and ``.aio``."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[P, Coroutine[Any, Any, R]]) -> None:
        self._fn = fn

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return run_sync(self._fn(*args, **kwargs))

    async def aio(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """The same call, awaitable from any event loop."""
        return await run_async(self._fn(*args, **kwargs))


class bridged(Generic[S, P, R]):
    """Decorates an ``async def`` method so instances expose it as :class:`Bridged`::

    class FunctionCall:
        @bridged
        async def get(self, timeout: float | None = None) -> R: ...

    call.get(5)            # blocking
    await call.get.aio(5)  # async
    """

    def __init__(self, fn: Callable[Concatenate[S, P], Coroutine[Any, Any, R]]) -> None:
        self._fn = fn
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def __get__(self, obj: S, owner: type[Any] | None = None) -> Bridged[P, R]:
        return Bridged(functools.partial(self._fn, obj))


class BridgedIter(Generic[P, T]):
    """An async iterator of chunks with a blocking face (an iterator) and ``.aio``."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[P, AsyncIterator[list[T]]]) -> None:
        self._fn = fn

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        return iterate_sync(self._fn(*args, **kwargs))

    def aio(self, *args: P.args, **kwargs: P.kwargs) -> AsyncIterator[T]:
        """The same iteration, from any event loop."""
        return iterate_async(self._fn(*args, **kwargs))


class bridged_iter(Generic[S, P, T]):
    """Decorates an async-generator method yielding chunks, exposing :class:`BridgedIter`."""

    def __init__(self, fn: Callable[Concatenate[S, P], AsyncIterator[list[T]]]) -> None:
        self._fn = fn
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def __get__(self, obj: S, owner: type[Any] | None = None) -> BridgedIter[P, T]:
        return BridgedIter(functools.partial(self._fn, obj))


def iterate_sync(chunks: AsyncIterator[list[T]]) -> Iterator[T]:
    """Iterate an async iterator of chunks from a thread outside the loop.

    One loop round trip per chunk, not per item. Closing the iterator early
    closes ``chunks`` on the loop: at once from a thread outside it, or, when the garbage
    collector closes an abandoned iterator on the loop's own thread (where blocking
    would deadlock), soon, as a task of the loop.
    """
    try:
        while True:
            try:
                chunk = run_sync(_anext(chunks))
            except StopAsyncIteration:
                return
            yield from chunk
    finally:
        closer = getattr(chunks, "aclose", None)
        if closer is not None:
            if on_background_loop():
                _close_later(closer)
            else:
                _close_now(chunks, closer)


def _close_now(chunks: object, closer: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    """Close ``chunks`` from a thread outside the loop, unless it is being closed there
    already: when the garbage collector finds an iterator and its async generator in one
    cycle, the loop's own finalizer may be closing the generator as this runs."""
    if getattr(chunks, "ag_running", False):
        return
    try:
        run_sync(closer())
    except RuntimeError as exc:
        if "already running" not in str(exc):
            raise


def _close_later(closer: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    task = asyncio.ensure_future(closer())
    _closing.add(task)
    task.add_done_callback(_closing.discard)


#: Iterators being closed on the loop (kept until they are: a task is weakly held).
_closing: set[asyncio.Future[Any]] = set()


async def iterate_async(chunks: AsyncIterator[list[T]]) -> AsyncIterator[T]:
    """Iterate an async iterator of chunks from any event loop."""
    try:
        while True:
            try:
                chunk = await run_async(_anext(chunks))
            except StopAsyncIteration:
                return
            for item in chunk:
                yield item
    finally:
        closer = getattr(chunks, "aclose", None)
        if closer is not None:
            await run_async(closer())


async def _anext(iterator: AsyncIterator[T]) -> T:
    return await iterator.__anext__()
