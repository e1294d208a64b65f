"""Every message that crosses the wire between the control plane and a container.

Each message is a frozen dataclass whose fields are plain msgpack types (str, int,
float, bool, bytes, None). On the wire a message is the msgpack array
``[tag, field1, field2, ...]``; :func:`encode` and :func:`decode` convert, and
:mod:`shoal.protocol.framing` adds the length prefix.

A container's conversation, in order::

    container                     control plane
    Hello(id, token, pid)  ──►
                           ◄──    Load(function definition)
    Ready(enter_seconds) | LoadFailed() ──►
                           ◄──    Input(input_id, args, method) ...   Cancel(input_id)
                           ◄──    Many(Input, ...)  (inputs dispatched together)
    Item(input_id, ...)*   ──►    (generators: each value; HTTP: each response event)
                           ◄──    Feed(input_id, ...)  Credit(input_id, n)  (HTTP inputs)
    Credit(input_id, n)    ──►    (HTTP inputs: the app took n bytes of what was fed)
    Output(input_id, ...)  ──►
    Many(Output, ...)      ──►    (outputs that finished together)
    Report(batch sizes, loop lag) ──► (every few seconds, after inputs ran)
                           ◄──    Shutdown()

Code in a container calls other functions (and spawns, and waits on stored calls) with
the very messages a client sends a server, below: ``Submit``, ``SubmitMany``, ``Wait``,
``CallCancel``, answered with ``CallItem``, ``CallDone``, ``Accepted`` and their batches.
The same code takes them (:mod:`shoal.control.intake`); the container's identity decides
what it may reach.

A client's conversation with a server (``shoal server``), in order::

    client                        server
    ClientHello(token)     ──►    (nothing else is read before it)
                           ◄──    Welcome(server_id)
    Request(id, op, body)  ──►    (deploy, lookup, app list, stats...: msgpack bodies)
                           ◄──    Reply(id, ok, body)
    Submit(call_id, ...)   ──►    (one input of a deployed function)
    SubmitMany(call_ids, ...) ──► (several inputs of one function: a map's chunk)
                           ◄──    CallItem(call_id, ...)*  CallDone(call_id, ...)
                           ◄──    Many(CallDone, ...)  (outcomes that ended together)
                           ◄──    Accepted(call_id, object_id)  (a durable spawn, stored)
                           ◄──    Many(Accepted, ...)  (stored in one commit)
    Wait(call_id, object_id) ──►  (the outcome of a stored spawn, when it has one)
                           ◄──    CallDone(call_id, ...)
    CallCancel(call_id)    ──►
                           ◄──    LogLines(source, stream, lines)  (an ephemeral app's
                                  containers' output and its image builds, as they come)

A batch of messages of one kind is one :class:`Many`, field by field (:func:`many`
builds one, :meth:`Many.each` splits it); ``SubmitMany`` is the one batch with fields
of its own (the function its inputs share).
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import operator
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from shoal.exception import from_wire, to_wire


class OutputStatus(enum.IntEnum):
    """How an input ended inside the container."""

    OK = 0  # data is the pickled return value
    ERROR = 1  # an Output's: payload.dump_failure; a CallDone's: the exception's pickle
    TIMEOUT = 2  # the input ran past the function's timeout; data is empty
    CANCELLED = 3  # the control plane cancelled the input; data is empty


@dataclass(frozen=True, slots=True)
class Hello:
    """First frame from a container: who it is and the secret that proves it."""

    container_id: str
    token: str
    pid: int


@dataclass(frozen=True, slots=True)
class Load:
    """Tells a container which function to load and how to run it.

    ``module_kind`` is ``"import"`` (import ``module_name`` with ``sys_path`` first
    on the path), ``"file"`` (load ``module_file`` under ``module_name``) or
    ``"main"`` (the caller's ``__main__``: load ``module_file`` without running its
    ``if __name__ == "__main__"`` block) or ``"serialized"`` (unpickle
    ``serialized``, a cloudpickled function). ``sys_path`` goes first on the
    container's import path. For a class, ``qualname`` names the class and
    ``parameters`` holds its pickled ``shoal.parameter()`` values.
    """

    function_name: str
    module_kind: str
    module_name: str
    module_file: str
    sys_path: list[str]
    qualname: str
    serialized: bytes | None
    max_inputs: int
    timeout: float
    parameters: bytes = b""
    #: The SHA-256 of the code bundle the paths are relative to ("": none). A container
    #: that does not find it unpacked on its machine fetches it (``Request`` op
    #: ``"fetch"``) before it loads anything.
    bundle: str = ""


@dataclass(frozen=True, slots=True)
class Ready:
    """The container loaded the function and takes inputs; its enter hooks took
    ``enter_seconds``."""

    enter_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class LoadFailed:
    """The container could not load the function; it exits after sending this."""

    message: str
    traceback: str


@dataclass(frozen=True, slots=True)
class Input:
    """One input to run: ``args`` is the pickled ``(args, kwargs)`` pair.

    ``method`` names the method of a class to call (empty for a function).
    ``call_id`` is the function call it belongs to (a durable spawn's ``fc-...``
    id); empty when the input is its own call.
    """

    input_id: str
    args: bytes
    method: str = ""
    call_id: str = ""


@dataclass(frozen=True, slots=True)
class Item:
    """One value a generator input yielded (pickled); its Output follows the last one."""

    input_id: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Output:
    """How one input ended. ``stuck`` means its thread still runs: replace the container."""

    input_id: str
    status: int
    data: bytes
    stuck: bool


@dataclass(frozen=True, slots=True)
class Feed:
    """Something more for a running input: a pickled ASGI ``receive`` event (a
    websocket message, a client disconnect) for an HTTP input."""

    input_id: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Credit:
    """Flow control for an HTTP input, in either direction. To a container: the client
    took ``amount`` more bytes of the response, send on. From a container: the app
    received ``amount`` more bytes of the request (body chunks, websocket messages),
    feed on."""

    input_id: str
    amount: int


@dataclass(frozen=True, slots=True)
class CallItem:
    """To a container: one value yielded by the generator of call ``call_id``."""

    call_id: str
    data: bytes


@dataclass(frozen=True, slots=True)
class CallDone:
    """To a container: how call ``call_id`` ended (an ``OutputStatus``); ``data`` is the
    pickled return value, or the pickled exception to raise."""

    call_id: str
    status: int
    data: bytes


@dataclass(frozen=True, slots=True)
class CallCancel:
    """From a container: the code that made call ``call_id`` no longer wants it."""

    call_id: str


@dataclass(frozen=True, slots=True)
class Cancel:
    """Stop running ``input_id`` if it can be stopped; its output is then CANCELLED."""

    input_id: str


@dataclass(frozen=True, slots=True)
class Shutdown:
    """Finish running inputs, take no more, and exit."""


@dataclass(frozen=True, slots=True)
class ClientHello:
    """First frame from a client of a server: the access token, and who is asking."""

    token: str
    client: str


@dataclass(frozen=True, slots=True)
class Welcome:
    """The server took the client's token; ``server_id`` names this server's run."""

    server_id: str


@dataclass(frozen=True, slots=True)
class Request:
    """A control request from a client; ``body`` is a msgpack map (never a pickle)."""

    request_id: int
    op: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to request ``request_id``: a msgpack body, or the error's kind and
    message when ``ok`` is false (``{"kind": "NotFoundError", "message": ...}``)."""

    request_id: int
    ok: bool
    body: bytes


async def answer_request(
    message: Request, handle: Callable[[str, dict[str, Any]], Awaitable[Any]]
) -> Reply:
    """The reply to ``message``: what ``handle(op, body)`` returns, or the error it raises
    (:func:`~shoal.exception.to_wire`: a bug's traceback goes with it)."""
    try:
        body = msgpack.unpackb(message.body, raw=False) if message.body else {}
        if not isinstance(body, dict):
            raise TypeError("a request body must be a map")
        result = await handle(message.op, body)
        return Reply(message.request_id, True, msgpack.packb(result, use_bin_type=True))
    except Exception as exc:
        error = to_wire(exc)
        return Reply(message.request_id, False, msgpack.packb(error, use_bin_type=True))


def settle(future: asyncio.Future[Any], message: Reply) -> None:
    """Hand ``future`` (unless it is done) what ``message`` answers: its body, or the
    error it describes, rebuilt as the peer raised it."""
    if future.done():
        return
    body = msgpack.unpackb(message.body, raw=False) if message.body else None
    if message.ok:
        future.set_result(body)
    else:
        future.set_exception(from_wire(body))


@dataclass(frozen=True, slots=True)
class Submit:
    """From a client: run one input of ``function`` in the deployed app ``app``; from
    code in a container, of ``function`` in its own app (``app`` empty: the container's
    identity names the app, and no other is reachable). For an object of an
    ``@app.cls`` class, ``function`` is the class.

    ``parameters`` holds the pickled parameters of a class object (empty for a
    function); the server passes them to the containers without reading them.
    ``durable`` stores the input first and answers ``Accepted`` (a spawn that
    survives the client and the server); otherwise the outcome comes as
    ``CallItem``s and a ``CallDone``. From a container, ``parent`` is the input whose
    code makes the call (for the call graph).
    """

    call_id: str
    app: str
    function: str
    method: str
    args: bytes
    stream: bool
    durable: bool
    parameters: bytes = b""
    parent: str = ""


@dataclass(frozen=True, slots=True)
class SubmitMany:
    """From a client, or code in a container: several inputs of one function in one
    frame (a chunk of a map, a burst of spawns); input ``i`` is call ``call_ids[i]`` with
    arguments ``args[i]``. Each is answered as its own :class:`Submit` would be (never
    streamed)."""

    call_ids: list[str]
    app: str
    function: str
    method: str
    args: list[bytes]
    durable: bool
    parameters: bytes = b""
    #: From a container: the input whose code made these calls (for the call graph).
    parent: str = ""


@dataclass(frozen=True, slots=True)
class Accepted:
    """To a client: durable input ``call_id`` is stored under ``object_id``."""

    call_id: str
    object_id: str


@dataclass(frozen=True, slots=True)
class Wait:
    """From a client: answer ``call_id`` with a ``CallDone`` once stored input
    ``object_id`` has an outcome (at once if it has one). With ``poll``, answer at
    once: the ``CallDone``, or an ``Accepted`` while the input has no outcome yet."""

    call_id: str
    object_id: str
    poll: bool = False


@dataclass(frozen=True, slots=True)
class LogLines:
    """To the client that runs an ephemeral app: ``lines`` that ``source`` (a container's
    label, ``<function>-c<n>``; empty for an image build, whose lines name the image)
    wrote to ``stream`` ("stdout" or "stderr")."""

    source: str
    stream: str
    lines: list[str]


@dataclass(frozen=True, slots=True)
class Many:
    """Several messages of one kind in one frame, field by field: ``columns[j][i]`` is
    field ``j`` of message ``i``, and ``kind`` the messages' wire tag. One encode and one
    decode serve them all, with no array per message. Sent for inputs dispatched to a
    container together (``Input``), outputs that finished together (``Output``), outcomes
    that ended in one loop turn (``CallDone``) and spawns stored in one commit
    (``Accepted``). :func:`decode` checks its shape, so a received one is well formed.
    """

    kind: int
    columns: list[list[Any]]

    def of(self, cls: type[Any]) -> bool:
        """Whether these are messages of class ``cls``."""
        return _CLASSES[self.kind] is cls

    def each(self) -> list[Message]:
        """Each message's own object."""
        cls = _CLASSES[self.kind]
        assert cls is not None  # decode refuses a retired kind
        return [cls(*fields) for fields in zip(*self.columns, strict=True)]


def batch(cls: type[Any], *columns: list[Any]) -> Many:
    """Messages of class ``cls`` given field by field, as one :class:`Many`."""
    return Many(_ENCODERS[cls][0], list(columns))


def many(messages: list[Any]) -> Many:
    """``messages`` (at least one, all of one class) as one :class:`Many`."""
    tag, fields = _ENCODERS[type(messages[0])]
    return Many(tag, [list(column) for column in zip(*map(fields, messages), strict=True)])


@dataclass(frozen=True, slots=True)
class Report:
    """What a container that ran inputs saw since its last report (every few seconds):
    the size of each batch its ``@batched`` function ran, and the longest its event loop
    was late."""

    batch_sizes: list[int]
    loop_lag: float


@dataclass(frozen=True, slots=True)
class Exec:
    """Run ``argv`` inside this container, beside its inputs (``shoal container exec``),
    for at most ``timeout`` seconds; its output comes back as :class:`ExecOutput`, its end
    as :class:`ExecDone`."""

    exec_id: int
    argv: list[str]
    timeout: float


@dataclass(frozen=True, slots=True)
class ExecOutput:
    """What command ``exec_id`` wrote to ``fd`` (1 or 2)."""

    exec_id: int
    fd: int
    data: bytes


@dataclass(frozen=True, slots=True)
class ExecDone:
    """Command ``exec_id`` ended with ``code`` (-1: its timeout ended it; 127: it could
    not be started)."""

    exec_id: int
    code: int


Message = (
    Hello
    | Load
    | Ready
    | LoadFailed
    | Input
    | Output
    | Cancel
    | Shutdown
    | Item
    | Feed
    | Credit
    | CallItem
    | CallDone
    | CallCancel
    | ClientHello
    | Welcome
    | Request
    | Reply
    | Submit
    | Accepted
    | Wait
    | SubmitMany
    | LogLines
    | Many
    | Report
    | Exec
    | ExecOutput
    | ExecDone
)

#: Wire tag of each message class; the index is the tag, so append only.
_CLASSES: Final[tuple[type[Any] | None, ...]] = (
    Hello,
    Load,
    Ready,
    LoadFailed,
    Input,
    Output,
    Cancel,
    Shutdown,
    Item,
    Feed,
    Credit,
    None,  # retired: Call
    CallItem,
    CallDone,
    CallCancel,
    ClientHello,
    Welcome,
    Request,
    Reply,
    Submit,
    Accepted,
    Wait,
    SubmitMany,
    None,  # retired: DoneMany
    None,  # retired: AcceptedMany
    None,  # retired: InputMany
    None,  # retired: OutputMany
    LogLines,
    Many,
    Report,
    Exec,
    ExecOutput,
    ExecDone,
)


def _fields_of(cls: type[Any]) -> Callable[[Any], tuple[Any, ...]]:
    """What gives a message's field values in order (one C call for most messages)."""
    names = [f.name for f in dataclasses.fields(cls)]
    if len(names) >= 2:
        return operator.attrgetter(*names)
    if names:
        one = operator.attrgetter(names[0])
        return lambda message: (one(message),)
    return lambda message: ()


_ENCODERS: Final[dict[type[Any], tuple[int, Callable[[Any], tuple[Any, ...]]]]] = {
    cls: (tag, _fields_of(cls)) for tag, cls in enumerate(_CLASSES) if cls is not None
}


#: The field names of each message class.
_FIELD_NAMES: Final[dict[type[Any], tuple[str, ...]]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in _CLASSES if cls is not None
}


#: Module name under which a container loads the caller's ``__main__`` script (so its
#: ``if __name__ == "__main__":`` block does not run); the caller aliases it too.
MAIN_MODULE_ALIAS: Final = "__shoal_main__"


class ProtocolError(Exception):
    """A peer sent bytes that are not a valid message."""


def encode(message: Message) -> bytes:
    """Return the msgpack body of ``message`` (no length prefix)."""
    tag, fields = _ENCODERS[type(message)]
    body: bytes = msgpack.packb([tag, *fields(message)], use_bin_type=True)
    return body


def decode(body: bytes) -> Message:
    """Parse one msgpack body into its message.

    Raises:
        ProtocolError: the body is not msgpack, or not a known message.
    """
    try:
        items = msgpack.unpackb(body, raw=False, use_list=True)
        tag, *fields = items
        cls = _CLASSES[tag]
        if cls is None:
            raise ValueError(f"retired message tag {tag}")
        message: Message = cls(*fields)
    except Exception as exc:  # any malformed input is the peer's fault
        raise ProtocolError(f"malformed message: {exc!r}") from exc
    if isinstance(message, Many):
        _check_many(message)
    return message


def _check_many(message: Many) -> None:
    """Raise ProtocolError unless ``message`` is a batch of a known kind, one column per
    field and as many values in each column."""
    kind, columns = message.kind, message.columns
    cls = _CLASSES[kind] if isinstance(kind, int) and 0 <= kind < len(_CLASSES) else None
    if cls is None or cls is Many or not isinstance(columns, list):
        raise ProtocolError(f"malformed batch of kind {kind!r}")
    if len(columns) != len(_FIELD_NAMES[cls]) or not all(
        isinstance(c, list) and len(c) == len(columns[0]) for c in columns
    ):
        raise ProtocolError(f"malformed batch of {cls.__name__}")
