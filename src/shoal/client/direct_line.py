"""A blocking line to a server, for ``f.remote()`` and ``f.spawn()`` called from plain threads.

The shared :class:`~shoal.client.connection.Connection` lives on the background
loop, so a blocking call through it crosses two thread hand-offs (caller → loop,
loop → caller): about a fifth of a warm ``.remote()``'s latency through a server
on a 2-core machine. A thread that calls a server's function with ``.remote()``
borrows a line instead (a socket of its own for the length of the call), writes
its ``Submit`` on it and reads the outcome from it, with no loop in between.
Lines authenticate like any connection (token first) and carry one call at a
time: a plain ``.remote()``, or a ``.spawn()`` (answered once the input is
stored); everything else (maps, generators, ``.aio``, waits, requests) keeps the
shared connection.

A line goes back to the process's idle lines when its call ends, so threads
that call once and exit (a thread per request) reuse lines instead of opening
one each; at most :data:`MAX_LINES` are open at once (calls beyond take the
shared connection). An idle line the server closed (it restarted) is noticed
before reuse and replaced. A line that breaks mid-call fails that call with
``ConnectionError``, as the shared connection does; an interrupted wait (Ctrl-C)
closes the line, and the server cancels the input of a client that went away.
"""

from __future__ import annotations

import itertools
import os
import select
import threading
import time

from shoal import exception, settings
from shoal.protocol import payload, transport
from shoal.protocol.framing import FRAME_OVERHEAD, FrameParser, frame
from shoal.protocol.messages import (
    Accepted,
    CallDone,
    ClientHello,
    Many,
    Message,
    OutputStatus,
    ProtocolError,
    Submit,
    Welcome,
)

#: Lines a process keeps open at most (each carries one call at a time).
MAX_LINES = 64
#: Seconds a line waits for the server to accept the token.
_HELLO_TIMEOUT = 10.0
#: Bytes read from the socket at a time.
_READ_SIZE = 256 * 1024
#: Seconds before trying again to open a line to a server that refused one.
_RETRY_AFTER = 5.0

#: A server's address and the token lines to it present.
Key = tuple[str, str]


class _Lines:
    """The process's lines: idle ones by server, and how many are open."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: dict[Key, list[Line]] = {}
        self.open = 0
        #: Servers no line could be opened to, with when to try again.
        self.refused: dict[Key, float] = {}


_lines = _Lines()


def _forget_after_fork() -> None:
    """A forked child has none of its parent's lines (their sockets are the parent's)."""
    global _lines
    for idle in _lines.idle.values():
        for line in idle:
            line.sock.close()
    _lines = _Lines()


os.register_at_fork(after_in_child=_forget_after_fork)


class Line:
    """An authenticated blocking socket to one server, used by one thread at a time.

    Raises (on construction):
        OSError: nothing answers at the URL.
        ConnectionError: the server refused the token or broke the handshake.
    """

    def __init__(self, url: str, token: str) -> None:
        self.key = (url, token)
        self.url = url
        self.closed = False
        self._ids = itertools.count(1)
        self._parser = FrameParser(settings.max_payload_bytes() + FRAME_OVERHEAD)
        self.sock = transport.connect(url)
        self.sock.settimeout(_HELLO_TIMEOUT)
        try:
            self.sock.sendall(frame(ClientHello(token, f"pid {os.getpid()} (line)")))
            if not any(isinstance(m, Welcome) for m in self._read()):
                raise exception.ConnectionError(f"the server at {url} did not welcome the line")
        except BaseException:
            self.sock.close()
            raise
        self.sock.settimeout(None)

    def next_id(self) -> str:
        return f"l{next(self._ids)}"

    def exchange(self, submit: Submit) -> Accepted | CallDone:
        """Send ``submit`` and block for its answer: its outcome, or for a durable one
        that it was stored (``Accepted``).

        A broken line yields an error outcome (``ConnectionError``) and closes; an
        interrupted wait closes the line (the server cancels the input) and re-raises.
        """
        try:
            self.sock.sendall(frame(submit))
            while True:
                for message in self._read():
                    reply = _reply_to(message, submit)
                    if reply is not None:
                        return reply
        except (OSError, ProtocolError, exception.ConnectionError):
            self.close()
            lost = exception.ConnectionError(f"the connection to the server at {self.url} closed")
            return CallDone(submit.call_id, OutputStatus.ERROR, payload.dump_error(lost))
        except BaseException:
            self.close()
            raise

    def _read(self) -> list[Message]:
        """The messages of the next read (maybe none: a frame may span reads).

        Raises:
            ConnectionError: the server closed the line.
        """
        data = self.sock.recv(_READ_SIZE)
        if not data:
            raise exception.ConnectionError(f"the server at {self.url} closed the line")
        return self._parser.feed(data)

    def alive(self) -> bool:
        """Whether the server still holds the line: an idle line has nothing to read
        unless the server closed it."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        return not poller.poll(0)

    def close(self) -> None:
        """Close the line for good (it no longer counts against :data:`MAX_LINES`)."""
        if self.closed:
            return
        self.closed = True
        self.sock.close()
        with _lines.lock:
            _lines.open -= 1


def _reply_to(message: Message, submit: Submit) -> Accepted | CallDone | None:
    """What ``message`` answers to ``submit``, if anything: its outcome, or for a
    durable submit that it was stored."""
    replies = message.each() if isinstance(message, Many) else [message]
    for reply in replies:
        if isinstance(reply, CallDone | Accepted) and reply.call_id == submit.call_id:
            if isinstance(reply, CallDone) or submit.durable:
                return reply
    return None


def borrow(url: str, token: str) -> Line | None:
    """A line to the server at ``url`` for one call: an idle one, or a new one; None
    when :data:`MAX_LINES` are in use or no line could be opened lately (the shared
    connection then carries the call, and reports what is wrong). Hand it back with
    :func:`give_back`.
    """
    key = (url, token)
    lines = _lines
    while True:
        with lines.lock:
            idle = lines.idle.get(key)
            line = idle.pop() if idle else None
            if line is None:
                if lines.open >= MAX_LINES or lines.refused.get(key, 0.0) > time.monotonic():
                    return None
                lines.open += 1  # this thread opens one, outside the lock
        if line is None:
            break
        if line.alive():
            return line
        line.close()  # the server went away (a restart): open a new one
    try:
        return Line(url, token)
    except BaseException as exc:
        refused = isinstance(exc, OSError | exception.Error)
        with lines.lock:
            lines.open -= 1
            if refused:
                lines.refused[key] = time.monotonic() + _RETRY_AFTER
        if refused:
            return None
        raise


def give_back(line: Line) -> None:
    """Return ``line`` after its call; a closed one is dropped."""
    with _lines.lock:
        if not line.closed:
            _lines.idle.setdefault(line.key, []).append(line)
