"""One home's named objects, shared by all of its user's processes while no server runs.

With no ``shoal server``, the first process to use a named Dict, Queue, Volume or
Secret opens the home's store and owns the home (:func:`~shoal.server.store.
lock_home`) until it exits: Dicts and Queues live in that process's memory, so no
other process may open the store beside it. So that a second terminal's
``shoal dict list``, or another script, still sees the same objects, the owner
also listens on a Unix socket in a private directory (mode 0700) and writes
where, with a fresh token, to ``HOME/objects.json`` (mode 0600). Any other
process of the user is then a *guest*: each object op it makes goes there, over
the framed protocol a client speaks to a server (``ClientHello``, ``Request``,
``Reply``), and is answered by the owner's objects. A guest reads secret values
and volume folders from the home itself (the store is SQLite in WAL mode, safe
to read from several processes), since the control plane looks them up without
waiting.

When the owner exits, the next op of a guest finds the home's lock free and
takes the home over (becoming the owner others reach), or finds the new owner.
An op in flight when its owner dies fails with a ConnectionError: it may or may
not have been applied, so it is not sent again. The ephemeral objects a guest
made go when it disconnects, as a client's do on a server.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import os
import secrets
import sqlite3
from typing import Any, Final

import msgpack

from shoal import settings
from shoal.control import run_dir
from shoal.exception import ConnectionError, ExecutionError
from shoal.protocol import transport
from shoal.protocol.framing import FRAME_OVERHEAD, FramedProtocol
from shoal.protocol.messages import (
    ClientHello,
    Message,
    Reply,
    Request,
    Welcome,
    answer_request,
    settle,
)
from shoal.server import secrets as home_secrets
from shoal.server.store import home_locked, lock_owner
from shoal.server.volumes import Volumes

#: The file in a home that says where its owner listens: {"pid", "socket", "token"}.
SHARE_FILE: Final = "objects.json"
#: Seconds a guest waits for an owner that has the lock but has not listened yet.
_OWNER_PATIENCE = 5.0
#: Ops a guest may make: those of Objects.handle, and dropping its ephemeral objects.
_PREFIXES: Final = ("dict_", "queue_", "volume_", "secret_")


class OwnerGone(Exception):
    """No owner answered at the home's socket: the home may be free to take over."""


# -- the owner's side ------------------------------------------------------------


async def share(home: str, objects: Any) -> asyncio.Server:
    """Serve ``objects`` (the home's :class:`~shoal.server.objects.Objects`) to the
    user's other processes, and say where in ``HOME/objects.json``; for this process's
    life (the listener and its directory go with it)."""
    directory = run_dir.create()
    path = os.path.join(directory, "objects.sock")
    token = secrets.token_urlsafe(32)
    server, _ = await transport.listen(path, lambda: _Guest(objects, token).protocol)
    info = {"pid": os.getpid(), "socket": path, "token": token}
    settings.write_private(os.path.join(home, SHARE_FILE), json.dumps(info))
    return server


class _Guest:
    """One other process using the owner's objects."""

    def __init__(self, objects: Any, token: str) -> None:
        self._objects = objects
        self._token = token
        self._authenticated = False
        self.protocol = FramedProtocol(self._on_message, self._on_lost, FRAME_OVERHEAD)
        #: Ephemeral Dicts and Queues it made: dropped when it goes.
        self._ephemeral: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._deadline = asyncio.get_running_loop().call_later(
            settings.handshake_timeout(), self._expired
        )

    def _expired(self) -> None:
        if not self._authenticated:
            self.protocol.abort()

    def _on_message(self, message: Message) -> None:
        if not self._authenticated:
            self._deadline.cancel()
            if isinstance(message, ClientHello) and hmac.compare_digest(
                message.token.encode(), self._token.encode()
            ):
                self._authenticated = True
                self.protocol.parser.max_frame = settings.max_payload_bytes() + FRAME_OVERHEAD
                self.protocol.send(Welcome(f"home owner {os.getpid()}"))
            else:
                self.protocol.abort()
        elif isinstance(message, Request):
            task = asyncio.get_running_loop().create_task(self._answer(message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self.protocol.abort()  # a guest has no business sending anything else

    async def _answer(self, message: Request) -> None:
        self.protocol.send(await answer_request(message, self._op))

    async def _op(self, op: str, body: dict[str, Any]) -> Any:
        if op == "drop":
            name = str(body.get("name", ""))
            if name in self._ephemeral:
                self._ephemeral.discard(name)
                self._objects.drop(name)
            return {}
        if not op.startswith(_PREFIXES):
            raise ExecutionError(f"{op!r} is not an object op")
        result = await self._objects.handle(op, body)
        if op.endswith("_ephemeral") and isinstance(result, dict):
            self._ephemeral.add(str(result["name"]))
        return result

    def _on_lost(self, exc: BaseException | None) -> None:
        self._deadline.cancel()
        for task in self._tasks:
            task.cancel()
        for name in self._ephemeral:
            self._objects.drop(name)
        self._ephemeral.clear()


# -- a guest's side --------------------------------------------------------------


class Guest:
    """The home's objects as another process of the user sees them: through its owner.

    It answers what :class:`~shoal.server.objects.Objects` does for the embedded
    server: ``handle`` (forwarded), ``secret_values`` and ``volume_path`` (read from
    the home), ``drop`` (forwarded, not waited for).
    """

    def __init__(self, home: str) -> None:
        self._home = home
        self._protocol: FramedProtocol | None = None
        self._connecting: asyncio.Future[FramedProtocol] | None = None
        self._welcome: asyncio.Future[str] | None = None
        self._requests: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self.owner: int | None = None
        self.lost = False
        self._volumes = Volumes(os.path.join(home, "volumes"))

    async def handle(self, op: str, body: dict[str, Any]) -> Any:
        """Make object op ``op`` on the owner's objects.

        Raises:
            OwnerGone: no owner answered (the op was not sent: it is safe to retry).
            ConnectionError: the owner went away before it answered.
            NotFoundError, InvalidError, ...: as the owner's objects raised them.
        """
        protocol = await self._connected()
        request_id = next(self._ids)
        answered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._requests[request_id] = answered
        protocol.send(Request(request_id, op, msgpack.packb(body, use_bin_type=True)))
        return await answered

    def secret_values(self, name: str) -> dict[str, str]:
        db = sqlite3.connect(os.path.join(self._home, "shoal.db"), timeout=10)
        try:
            return home_secrets.read(db, name)
        except sqlite3.OperationalError:  # no secrets table yet: no secret at all
            return home_secrets.read(None, name)
        finally:
            db.close()

    def volume_path(self, name: str) -> str:
        return self._volumes.path(name)

    def drop(self, name: str) -> None:
        if self._protocol is not None and not self.lost:
            self._protocol.send(Request(next(self._ids), "drop", msgpack.packb({"name": name})))

    async def _connected(self) -> FramedProtocol:
        if self.lost:
            raise OwnerGone(self._home)
        if self._protocol is not None:
            return self._protocol
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        try:
            return await asyncio.shield(self._connecting)
        except BaseException:
            self._connecting = None
            raise

    async def _connect(self) -> FramedProtocol:
        """Reach the owner named in the home's share file, waiting a little for one that
        holds the lock but is not listening yet.

        Raises:
            OwnerGone: the owner named there is gone (or none is named and the lock is free).
            ExecutionError: the owner runs but does not share the home.
        """
        loop = asyncio.get_running_loop()
        give_up = loop.time() + _OWNER_PATIENCE
        while True:
            info = self._share_info()
            if info is not None:
                try:
                    return await self._dial(info)
                except OSError:
                    pass
            if not home_locked(self._home):
                raise OwnerGone(self._home)
            owner = lock_owner(self._home)
            if loop.time() > give_up:
                raise ExecutionError(
                    f"another Shoal process (pid {owner}) owns {self._home} and does not "
                    "share its named objects (a server starting, or an older Shoal); wait "
                    "for it to exit, or start `shoal server` so that every process shares "
                    "the home"
                )
            await asyncio.sleep(0.05)

    def _share_info(self) -> dict[str, Any] | None:
        try:
            with open(os.path.join(self._home, SHARE_FILE)) as file:
                info = json.load(file)
        except (OSError, ValueError):
            return None
        return info if isinstance(info, dict) else None

    async def _dial(self, info: dict[str, Any]) -> FramedProtocol:
        loop = asyncio.get_running_loop()
        protocol = FramedProtocol(self._on_message, self._on_lost, FRAME_OVERHEAD)
        self._welcome = loop.create_future()
        await loop.create_unix_connection(lambda: protocol, str(info["socket"]))
        protocol.parser.max_frame = settings.max_payload_bytes() + FRAME_OVERHEAD
        protocol.send(ClientHello(str(info["token"]), f"pid {os.getpid()}"))
        try:
            await asyncio.wait_for(self._welcome, settings.handshake_timeout())
        except (TimeoutError, ConnectionError):
            protocol.abort()
            raise OSError(f"the owner of {self._home} refused this process") from None
        self._protocol = protocol
        self.owner = int(info["pid"])
        return protocol

    def _on_message(self, message: Message) -> None:
        if isinstance(message, Welcome):
            if self._welcome is not None and not self._welcome.done():
                self._welcome.set_result(message.server_id)
        elif isinstance(message, Reply):
            answer = self._requests.pop(message.request_id, None)
            if answer is not None:
                settle(answer, message)

    def _on_lost(self, exc: BaseException | None) -> None:
        gone = ConnectionError(
            f"the process that owned {self._home} (pid {self.owner}) went away before it "
            "answered; the operation may or may not have been done"
        )
        if self._welcome is not None and not self._welcome.done():
            self._welcome.set_exception(gone)
        for answer in self._requests.values():
            if not answer.done():
                answer.set_exception(gone)
        self._requests.clear()
        if self._protocol is not None:
            self.lost = True
