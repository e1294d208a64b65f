"""One client connection to a server: authenticated first, then calls and requests.

Until the client's first frame proves it holds an access token
(``ClientHello``), a session reads at most one small frame, for at most
SHOAL_HANDSHAKE_TIMEOUT seconds, and unpickles nothing; anything else closes
the connection. After it:

- ``Submit``, ``SubmitMany``, ``Wait``, ``CallCancel``, ``Feed`` and ``Credit`` are
  calls, taken by :class:`~shoal.control.intake.Intake` as a container's calls are: a
  client holding the server's token reaches every deployed app (:class:`ClientIdentity`).
- ``Request`` carries the control operations (:class:`shoal.server.server.Server`
  answers them), with msgpack bodies.

When the client goes away, its calls are cancelled (they have no one to answer
to); its durable spawns run on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from shoal import settings
from shoal.control.calls import InputRecord
from shoal.control.intake import DurableSpawns, Intake
from shoal.control.pool import Pool
from shoal.protocol.framing import FRAME_OVERHEAD, FramedProtocol
from shoal.protocol.messages import (
    ClientHello,
    LogLines,
    Message,
    Request,
    Welcome,
    answer_request,
)
from shoal.protocol.pipe import PipeEnd

if TYPE_CHECKING:
    from shoal.server.server import Server


class ClientIdentity:
    """What a client holding the server's token reaches: every deployed app's functions,
    spawns and stored calls."""

    def __init__(self, server: Server) -> None:
        self._server = server
        #: The pool of ``function`` in ``app``'s current version (on the hot path: the
        #: server's own method, with no call around it).
        self.pool: Callable[[str, str, bytes], Pool] = server.pool_for

    def spawns(self, app: str) -> tuple[DurableSpawns, str]:
        return self._server.spawns, app

    def parent(self, input_id: str) -> InputRecord | None:
        return None  # a client runs no inputs

    def waits_on(self, object_id: str) -> DurableSpawns:
        return self._server.spawns


class Session:
    """One client's connection (see the module docstring)."""

    def __init__(
        self, server: Server, over: type[FramedProtocol | PipeEnd] = FramedProtocol
    ) -> None:
        self._server = server
        self.authenticated = False
        #: A socket's framed connection, or a pipe from a client in this process.
        self.protocol = over(self._on_message, self._on_lost, FRAME_OVERHEAD)
        #: Its calls (on a pipe, outcomes go at once: see Intake).
        self._intake = Intake(
            ClientIdentity(server), self.protocol.send, self.protocol.abort, over is PipeEnd, True
        )
        self._tasks: set[asyncio.Task[None]] = set()
        #: Ephemeral apps this client runs: they end when it goes away.
        self._apps: set[str] = set()
        #: How to stop hearing each of those apps' output.
        self._unwatch: dict[str, Callable[[], None]] = {}
        #: Ephemeral Dicts and Queues this client made (dropped when it goes).
        self._objects: set[str] = set()
        self._deadline: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            settings.handshake_timeout(), self._handshake_expired
        )

    # -- authentication ---------------------------------------------------------

    def _handshake_expired(self) -> None:
        self._deadline = None
        if not self.authenticated:
            self.protocol.abort()

    def _hello(self, message: Message) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if isinstance(message, ClientHello) and self._server.authorize(message.token):
            self.authenticated = True
            self.protocol.parser.max_frame = settings.max_payload_bytes() + FRAME_OVERHEAD
            self.protocol.send(Welcome(self._server.server_id))
        else:
            self.protocol.abort()  # nothing more is read from a peer that did not prove itself

    def own(self, app_id: str) -> None:
        """Tie ephemeral app ``app_id`` to this client: it ends when the client goes."""
        self._apps.add(app_id)

    def disown(self, app_id: str) -> None:
        self._apps.discard(app_id)
        unwatch = self._unwatch.pop(app_id, None)
        if unwatch is not None:
            unwatch()

    def watch_output(self, app_id: str) -> None:
        """Send this client what app ``app_id``'s containers print, as they print it
        (``shoal run`` shows it as it would show a local container's)."""
        if app_id not in self._unwatch:
            self._unwatch[app_id] = self._server.logs.watch(app_id, self._send_lines)

    def _send_lines(self, source: str, stream: str, lines: list[str]) -> None:
        self.protocol.send(LogLines(source, stream, lines))

    def build_log(self, line: str) -> None:
        """Send this client one line of an image build it waits for."""
        self.protocol.send(LogLines("", "stdout", [line]))

    def own_object(self, name: str) -> None:
        """Tie ephemeral Dict or Queue ``name`` to this client: it goes when the client goes."""
        self._objects.add(name)

    # -- messages -----------------------------------------------------------------

    def _on_message(self, message: Message) -> None:
        if not self.authenticated:
            self._hello(message)
        elif isinstance(message, Request):
            self._request(message)
        elif not self._intake.take(message):
            self.protocol.abort()  # a client has no business sending anything else

    def _request(self, message: Request) -> None:
        task = asyncio.get_running_loop().create_task(self._answer(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, message: Request) -> None:
        self.protocol.send(
            await answer_request(message, lambda op, body: self._server.handle(op, body, self))
        )

    def _on_lost(self, exc: BaseException | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._intake.lost()
        for task in self._tasks:
            task.cancel()
        for app_id in self._apps:  # a detached one drains first
            self._server.apps.finish(app_id)
        self._apps.clear()
        for unwatch in self._unwatch.values():
            unwatch()
        self._unwatch.clear()
        for name in self._objects:
            self._server.objects.drop(name)
        self._objects.clear()
        self._server.forget(self)
