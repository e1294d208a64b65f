"""What user code can ask about where it runs (the current input, local or not), and
the channel through which it calls other functions from inside a container."""

from __future__ import annotations

import contextvars
import itertools
import threading
from collections.abc import Callable
from typing import Any

from shoal.protocol.messages import (
    Accepted,
    CallCancel,
    CallDone,
    CallItem,
    Message,
    Reply,
    Request,
    Submit,
    SubmitMany,
    Wait,
)

#: The id of the input this task or thread is running; set per input by the executor.
current_input: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "shoal_current_input", default=None
)

_in_container = False


#: The function call of the input this thread or task runs (its own id, unless the
#: input was spawned durably: then the spawn's ``fc-...`` id).
current_call: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "shoal_current_call", default=None
)


def enter_input(input_id: str | None, call_id: str = "") -> None:
    """Mark the current thread or task as running ``input_id`` (None: no input)."""
    current_input.set(input_id)
    current_call.set(call_id or input_id)


def current_function_call_id() -> str | None:
    """The id of the function call being run, inside a container; ``None`` elsewhere.

    For an input spawned on a deployed app, it is the spawn's id (``call.object_id``,
    what ``shoal.FunctionCall.from_id`` takes); for any other input, the input's id.
    """
    return current_call.get()


def current_input_id() -> str | None:
    """The id of the input being run, inside a container; ``None`` elsewhere.

    Correct under concurrency: each thread or task sees its own input.
    """
    return current_input.get()


def is_local() -> bool:
    """``True`` in the caller's process, ``False`` inside a container."""
    return not _in_container


def mark_container() -> None:
    """Record that this process is a container (called once, before user code loads)."""
    global _in_container
    _in_container = True


class CallChannel:
    """How code inside a container calls other functions: through its control plane.

    The runtime installs one per container (:func:`channel`); the client's handles
    use it when no app runs in this process. Replies arrive on the runtime's loop
    and go to the callback registered with each call.
    """

    def __init__(self, send: Callable[[Message], None]) -> None:
        self._send = send
        self._ids = itertools.count(1)
        #: Who gets the replies to each call id (CallItem, CallDone or Accepted).
        self._handlers: dict[str, Callable[[Any], None]] = {}
        self._replies: dict[int, Callable[[Reply], None]] = {}
        self._lock = threading.Lock()

    def send_many(
        self,
        calls: list[tuple[str, bytes, Callable[[Any], None]]],
        app: str,
        function: str,
        method: str,
        parameters: bytes,
        parent: str,
    ) -> None:
        """Start plain calls of one function (safe from any thread): ``calls`` are (call
        id from :meth:`next_id`, pickled arguments, who gets the replies); they leave
        in one frame. ``parent`` is the input the calling code runs ("" for none)."""
        with self._lock:
            for call_id, _, on_reply in calls:
                self._handlers[call_id] = on_reply
        if len(calls) == 1:
            call_id, args, _ = calls[0]
            submit = Submit(call_id, app, function, method, args, False, False, parameters, parent)
            self._send(submit)
            return
        ids, many = [c for c, _, _ in calls], [a for _, a, _ in calls]
        self._send(SubmitMany(ids, app, function, method, many, False, parameters, parent))

    def send_call(
        self, message: Submit | Wait, on_reply: Callable[[CallItem | CallDone | Accepted], None]
    ) -> None:
        """Send one call, durable spawn or wait on a stored call (its ``call_id`` from
        :meth:`next_id`); ``on_reply`` gets its ``CallItem``s, and its ``Accepted`` or
        ``CallDone`` (safe from any thread)."""
        with self._lock:
            self._handlers[message.call_id] = on_reply
        self._send(message)

    def next_id(self) -> str:
        """A fresh call id for :meth:`send_call` and :meth:`send_many`."""
        return f"call-{next(self._ids)}"

    def cancel(self, call_id: str) -> None:
        """Tell the control plane the call is no longer wanted."""
        with self._lock:
            wanted = self._handlers.pop(call_id, None) is not None
        if wanted:
            self._send(CallCancel(call_id))

    def request(self, op: str, body: bytes, on_reply: Callable[[Reply], None]) -> None:
        """Send object op ``op`` (a msgpack ``body``); ``on_reply`` gets the answer on the
        runtime's loop (safe from any thread)."""
        request_id = next(self._ids)
        with self._lock:
            self._replies[request_id] = on_reply
        self._send(Request(request_id, op, body))

    def deliver_reply(self, reply: Reply) -> None:
        """The answer to a :meth:`request` (on the runtime's loop)."""
        with self._lock:
            handler = self._replies.pop(reply.request_id, None)
        if handler is not None:
            handler(reply)

    def deliver(self, reply: CallItem | CallDone | Accepted) -> None:
        """A reply from the control plane (on the runtime's loop)."""
        with self._lock:
            if isinstance(reply, CallDone | Accepted):
                handler = self._handlers.pop(reply.call_id, None)
            else:
                handler = self._handlers.get(reply.call_id)
        if handler is not None:
            handler(reply)


_channel: CallChannel | None = None
#: How many inputs this container runs at once, once it has loaded its code.
_concurrency: int | None = None


def set_input_concurrency(capacity: int) -> None:
    """Record the container's capacity (its ``max_inputs``), for user code to ask."""
    global _concurrency
    _concurrency = capacity


def input_concurrency() -> int | None:
    """How many inputs this container runs at once; ``None`` outside containers."""
    return _concurrency


def install_channel(channel: CallChannel) -> None:
    """Make ``channel`` the way this container's user code reaches other functions."""
    global _channel
    _channel = channel


def channel() -> CallChannel | None:
    """The container's call channel, or ``None`` outside containers."""
    return _channel
