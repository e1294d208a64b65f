"""Small pure parts: dispatch choice, the input queue, slots, framing, payloads, exports."""

from __future__ import annotations

import asyncio
import pickle

import msgpack
import pytest

import shoal
from shoal.container.executors import is_async_callable
from shoal.container.slots import Slots
from shoal.control.calls import CallState, InputRecord
from shoal.control.containers import ContainerHandle, ContainerState
from shoal.control.dispatcher import Dispatcher
from shoal.control.input_queue import InputQueue
from shoal.exception import RemoteError, RequestSizeError, SerializationError
from shoal.protocol import payload
from shoal.protocol.framing import FramedProtocol, frame, spans
from shoal.protocol.messages import (
    CallDone,
    Hello,
    Input,
    Many,
    Message,
    Output,
    ProtocolError,
    batch,
    decode,
    encode,
    many,
)


def container(name: str, running: int, max_inputs: int = 4) -> ContainerHandle:
    handle = ContainerHandle(name, max_inputs)
    handle.move_to(ContainerState.READY)
    for i in range(running):
        handle.running[f"{name}-{i}"] = InputRecord(f"{name}-{i}", b"", lambda _: None)
    return handle


def dispatcher(target: int, *containers: ContainerHandle) -> Dispatcher:
    d = Dispatcher(target, max_inputs=4)
    for c in containers:
        d.add(c)
    return d


def test_dispatch_packs_the_busiest_container_below_target() -> None:
    a, b, c = container("a", 1), container("b", 2), container("c", 0)
    assert dispatcher(3, a, b, c).pick() is b


def test_dispatch_bursts_the_least_busy_only_when_all_are_at_target() -> None:
    a, b = container("a", 3), container("b", 2)
    assert dispatcher(2, a, b).pick() is b
    assert dispatcher(2, container("a", 4), container("b", 4)).pick() is None


def test_dispatch_follows_moves_and_removals() -> None:
    a, b = container("a", 0), container("b", 1)
    d = dispatcher(4, a, b)
    assert d.pick() is b
    b.running.clear()
    d.moved(b, before=1)
    assert d.pick() is a  # both idle now: a has been idle longer
    d.remove(a)
    d.remove(a)  # twice is harmless
    assert d.pick() is b
    d.remove(b)
    assert d.pick() is None
    assert len(d) == 0


def test_container_lifecycle_rejects_illegal_transitions() -> None:
    handle = ContainerHandle("x", 1)
    handle.move_to(ContainerState.STOPPED)
    with pytest.raises(RuntimeError, match="STOPPED -> READY"):
        handle.move_to(ContainerState.READY)


def test_input_queue_skips_cancelled_records() -> None:
    done: list[str] = []
    queue = InputQueue()
    records = [InputRecord(str(i), b"", lambda r: done.append(r.input_id)) for i in range(3)]
    for record in records:
        queue.push(record)
    records[0].move_to(CallState.CANCELLED)
    queue.forget(records[0])
    assert len(queue) == 2
    assert queue.pop() is records[1]
    queue.push_front(records[1])
    assert [queue.pop(), queue.pop(), queue.pop()] == [records[1], records[2], None]
    assert done == ["0"]


def test_slots_bound_and_resize() -> None:
    async def scenario() -> list[int]:
        slots = Slots(2)
        order: list[int] = []
        await slots.acquire()
        await slots.acquire()
        assert not slots.try_acquire()

        async def third() -> None:
            await slots.acquire()
            order.append(3)

        task = asyncio.create_task(third())
        await asyncio.sleep(0)
        assert order == []
        slots.resize(3)
        await task
        assert (slots.used, slots.capacity) == (3, 3)
        return order

    assert asyncio.run(scenario()) == [3]


def test_messages_round_trip_and_reject_garbage() -> None:
    for message in (Hello("c1", "t", 5), Input("in-1", b"\x00\x01"), Output("in-1", 0, b"", True)):
        assert decode(encode(message)) == message
    with pytest.raises(ProtocolError):
        decode(b"\xc1")
    with pytest.raises(ProtocolError):
        decode(encode(Hello("c", "t", 1))[:-1])


def test_batched_messages_round_trip() -> None:
    inputs = batch(Input, ["in-1", "in-2"], [b"a", b"b"], ["", "run"], ["", "fc-1"])
    assert decode(encode(inputs)) == inputs
    assert inputs.of(Input) and not inputs.of(Output)
    assert inputs.each() == [Input("in-1", b"a"), Input("in-2", b"b", "run", "fc-1")]
    outputs = [Output("in-1", 0, b"x", False), Output("in-2", 1, b"y", True)]
    assert decode(encode(many(outputs))) == many(outputs)
    assert many(outputs).columns == [["in-1", "in-2"], [0, 1], [b"x", b"y"], [False, True]]
    assert decode(encode(many(outputs))).each() == outputs
    done = [CallDone("c1", 0, b"r")]
    assert decode(encode(many(done))).each() == done


def test_a_malformed_batch_is_refused() -> None:
    good = many([Output("in-1", 0, b"x", False), Output("in-2", 1, b"y", True)])
    many_tag = msgpack.unpackb(encode(good))[0]
    for bad in (
        Many(good.kind, good.columns[:3]),  # a field short
        Many(good.kind, [*good.columns[:3], [False]]),  # a column short
        Many(good.kind, "columns"),  # type: ignore[arg-type]
        Many(99, good.columns),  # no such kind
        Many(-1, good.columns),
        Many(many_tag, [[1], [[]]]),  # a batch of batches
    ):
        with pytest.raises(ProtocolError):
            decode(encode(bad))


def test_spans_keep_batches_inside_the_limits() -> None:
    assert spans([], 100, 4) == []
    assert spans([10, 10, 10], 25, 8) == [(0, 2), (2, 3)]
    assert spans([30, 5, 5], 25, 8) == [(0, 1), (1, 3)]  # too big for any batch: alone
    assert spans([1] * 5, 100, 2) == [(0, 2), (2, 4), (4, 5)]
    sizes = [(i * 37) % 50 for i in range(200)]
    runs = spans(sizes, 120, 7)
    assert [s for s, _ in runs[1:]] == [e for _, e in runs[:-1]]  # contiguous, in order
    assert (runs[0][0], runs[-1][1]) == (0, len(sizes))
    for start, end in runs:
        assert end - start <= 7
        assert end - start == 1 or sum(sizes[start:end]) <= 120


def test_framed_protocol_parses_split_and_coalesced_frames() -> None:
    got: list[Message] = []
    lost: list[BaseException | None] = []
    proto = FramedProtocol(got.append, lost.append, max_frame=1024)
    data = frame(Input("a", b"1")) + frame(Input("b", b"2"))
    for i in range(0, len(data), 3):  # arrives in odd pieces
        proto.data_received(data[i : i + 3])
    assert got == [Input("a", b"1"), Input("b", b"2")]
    assert lost == []


def test_framed_protocol_refuses_oversized_frames() -> None:
    lost: list[BaseException | None] = []
    proto = FramedProtocol(lambda m: None, lost.append, max_frame=10)
    proto.data_received(frame(Input("a", b"x" * 100)))
    assert isinstance(lost[0], ProtocolError)


def test_payload_errors() -> None:
    import threading

    with pytest.raises(SerializationError, match="arguments of f"):
        payload.dumps(threading.Lock(), "arguments of f")
    assert payload.loads(payload.dumps([1, 2], "x"), "x") == [1, 2]


def test_payload_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_MAX_PAYLOAD_BYTES", "100")
    with pytest.raises(RequestSizeError):
        payload.dumps(b"x" * 200, "y")


def test_exceptions_travel_with_their_traceback() -> None:
    try:
        raise KeyError("k")
    except KeyError as exc:
        _, data = payload.read_failure(payload.dump_failure(exc))
    assert data is not None
    rebuilt = payload.load_exception(data, "f (input in-1)")
    assert isinstance(rebuilt, KeyError)
    assert "f (input in-1)" in rebuilt.__notes__[0]


def test_an_exception_that_cannot_be_pickled_becomes_remote_error() -> None:
    class Unpicklable(Exception):
        def __reduce__(self) -> str:
            raise TypeError("no")

    _, data = payload.read_failure(payload.dump_failure(Unpicklable("x")))
    assert data is not None
    rebuilt = payload.load_exception(data, "f")
    assert isinstance(rebuilt, RemoteError)
    assert "Unpicklable" in str(rebuilt)
    assert pickle.loads(pickle.dumps(RemoteError("x"))).args == ("x",)


def test_is_async_callable_sees_through_partials_and_objects() -> None:
    import functools

    async def coro(x: int) -> int:
        return x

    class Handler:
        async def __call__(self) -> None: ...

    assert is_async_callable(functools.partial(coro, 1))
    assert is_async_callable(Handler())
    assert not is_async_callable(lambda: None)


def test_public_names_are_pinned() -> None:
    assert sorted(shoal.__all__) == [
        "App",
        "Cls",
        "ContainerCrashError",
        "ContainerInitError",
        "Cron",
        "Dict",
        "Error",
        "Function",
        "FunctionCall",
        "FunctionStats",
        "FunctionTimeoutError",
        "Image",
        "InvalidError",
        "LogLine",
        "Obj",
        "Period",
        "Queue",
        "RemoteError",
        "Retries",
        "Sandbox",
        "Secret",
        "Volume",
        "__version__",
        "asgi_app",
        "batched",
        "concurrent",
        "container_process",
        "current_function_call_id",
        "current_input_id",
        "enable_output",
        "enter",
        "exception",
        "exit",
        "experimental",
        "fastapi_endpoint",
        "file_io",
        "is_local",
        "method",
        "parameter",
        "web_endpoint",
        "web_server",
        "wsgi_app",
    ]


def test_a_failed_jailed_build_command_says_what_a_jail_cannot_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shoal.backends import image_build, isolation

    assert "apt_install" in image_build._jailed_hint(["sh", "-c", "apt-get install -y jq"])
    monkeypatch.setattr(isolation, "users_problem", lambda: "the server is not root")
    hint = image_build._jailed_hint(["sh", "-c", "useradd -m coder"])
    assert "no users but root: the server is not root" in hint
    assert image_build._jailed_hint(["sh", "-c", "make"]) == ""
    monkeypatch.setattr(isolation, "users_problem", lambda: "")
    assert image_build._jailed_hint(["sh", "-c", "useradd -m coder"]) == ""
