"""What a server keeps across restarts, in one SQLite file under its home.

Tables: ``tokens`` (SHA-256 of each access token, never the token), ``bundles``
(content-addressed code archives), ``versions`` (every deployment of every app:
its bundle and its pickled function definitions), ``apps`` (each app's current
version and whether it runs), ``calls`` (durable spawns: arguments, state,
outcome), ``web_ports`` (the port each deployed web endpoint has of its own) and
``sandboxes`` (each sandbox: its app, name, tags and command, and how it ended).

Writes are group commits: :meth:`Store.write` queues a change with a callback,
and one writer thread applies everything queued since its last commit in a
single transaction, then runs the callbacks on the server's loop. The file is in
WAL mode with ``synchronous=NORMAL``: a commit is durable against a crash of the
server process (the case a restart recovers from) without an fsync per
transaction; a power loss may lose the last commits (SQLite's documented
trade-off for that mode). Reads use their own connection on the loop's thread;
WAL lets them run beside the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from shoal.exception import ExecutionError

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS tokens (
    digest TEXT PRIMARY KEY, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS bundles (
    digest TEXT PRIMARY KEY, data BLOB NOT NULL, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    app TEXT NOT NULL, version INTEGER NOT NULL, bundle TEXT NOT NULL,
    functions BLOB NOT NULL, created REAL NOT NULL, client TEXT NOT NULL,
    PRIMARY KEY (app, version)
);
CREATE TABLE IF NOT EXISTS apps (
    name TEXT PRIMARY KEY, version INTEGER NOT NULL, state TEXT NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS calls (
    id TEXT PRIMARY KEY, app TEXT NOT NULL, function TEXT NOT NULL,
    method TEXT NOT NULL, parameters BLOB NOT NULL, args BLOB,
    status INTEGER, result BLOB, created REAL NOT NULL, finished REAL
);
CREATE TABLE IF NOT EXISTS web_ports (
    endpoint TEXT PRIMARY KEY, port INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sandboxes (
    id TEXT PRIMARY KEY, app TEXT NOT NULL, name TEXT NOT NULL, tags TEXT NOT NULL,
    command TEXT NOT NULL, created REAL NOT NULL, ended REAL, returncode INTEGER,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_pending ON calls (finished) WHERE finished IS NULL;
CREATE INDEX IF NOT EXISTS calls_finished ON calls (finished);
"""


@dataclass(frozen=True)
class StoredCall:
    """One durable spawn as stored: ``status`` is ``None`` until it has an outcome."""

    id: str
    app: str
    function: str
    method: str
    parameters: bytes
    args: bytes | None
    status: int | None
    result: bytes | None
    created: float
    finished: float | None


@dataclass(frozen=True)
class AppRow:
    """One app: its current version and whether it runs (``deployed``) or was stopped."""

    name: str
    version: int
    state: str
    updated: float


@dataclass(frozen=True)
class VersionRow:
    """One deployment of an app."""

    app: str
    version: int
    bundle: str
    functions: bytes
    created: float
    client: str


#: A queued change: applied inside the writer's transaction.
Change = Callable[[sqlite3.Connection], None]


def digest(data: bytes) -> str:
    """The content address of ``data`` (hex SHA-256)."""
    return hashlib.sha256(data).hexdigest()


class Store:
    """The server's SQLite file (see the module docstring).

    Args:
        path: the database file; created with its tables if missing.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._reader = _connect(path)
        self._reader.executescript(_SCHEMA)
        self._reader.commit()
        self._queue: queue.SimpleQueue[tuple[Change, Callable[[], None] | None] | None] = (
            queue.SimpleQueue()
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        #: Transactions committed so far (one per group).
        self.commits = 0
        #: Outcomes of this loop turn, written together (:meth:`finish_call`).
        self._finishing: list[tuple[tuple[int, bytes, float, str], Callable[[], None]]] = []

    @property
    def db(self) -> sqlite3.Connection:
        """The connection of the loop's thread, for other tables' small reads and writes."""
        return self._reader

    # -- writes: one thread, one transaction per group ------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the writer thread; its callbacks run on ``loop``."""
        self._loop = loop
        self._thread = threading.Thread(target=self._write_forever, name="shoal-store", daemon=True)
        self._thread.start()

    def write(self, change: Change, then: Callable[[], None] | None = None) -> None:
        """Apply ``change`` in the next group commit; call ``then`` on the loop after it."""
        self._queue.put((change, then))

    async def flush(self) -> None:
        """Return once every change queued so far is committed."""
        self._write_finished()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def finish() -> None:
            if not done.done():
                done.set_result(None)

        self.write(lambda _: None, finish)
        await done

    def close(self) -> None:
        """Commit what is queued, stop the writer, close both connections."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        self._reader.close()

    def _write_forever(self) -> None:
        conn = _connect(self.path)
        try:
            while True:
                item = self._queue.get()
                group = []
                stop = item is None
                while item is not None:
                    group.append(item)
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                if group:
                    self._commit(conn, group)
                if stop:
                    return
        finally:
            conn.close()

    def _commit(
        self, conn: sqlite3.Connection, group: list[tuple[Change, Callable[[], None] | None]]
    ) -> None:
        with conn:  # one transaction for the whole group
            for change, _ in group:
                change(conn)
        self.commits += 1
        callbacks = [then for _, then in group if then is not None]
        if callbacks and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(_run_all, callbacks)

    # -- tokens ----------------------------------------------------------------

    def add_token(self, token: str) -> None:
        """Record ``token`` (its digest) as one that may connect."""
        with self._reader:
            self._reader.execute(
                "INSERT OR IGNORE INTO tokens VALUES (?, ?)", (digest(token.encode()), time.time())
            )

    def token_digests(self) -> list[str]:
        """The digests of every token that may connect."""
        return [row[0] for row in self._reader.execute("SELECT digest FROM tokens")]

    # -- deployments -------------------------------------------------------------

    def put_bundle(self, data: bytes) -> str:
        """Store a code bundle (once per content); return its digest."""
        key = digest(data)
        with self._reader:
            self._reader.execute(
                "INSERT OR IGNORE INTO bundles VALUES (?, ?, ?)", (key, data, time.time())
            )
        return key

    def bundle(self, key: str) -> bytes | None:
        row = self._reader.execute("SELECT data FROM bundles WHERE digest = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def add_version(self, app: str, bundle: str, functions: bytes, client: str) -> int:
        """Record a new deployment of ``app`` and make it current; return its version."""
        now = time.time()
        with self._reader:
            row = self._reader.execute(
                "SELECT COALESCE(MAX(version), 0) FROM versions WHERE app = ?", (app,)
            ).fetchone()
            version = int(row[0]) + 1
            self._reader.execute(
                "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?)",
                (app, version, bundle, functions, now, client),
            )
            self._reader.execute(
                "INSERT OR REPLACE INTO apps VALUES (?, ?, 'deployed', ?)", (app, version, now)
            )
        return version

    def set_app_state(self, app: str, state: str) -> None:
        with self._reader:
            self._reader.execute(
                "UPDATE apps SET state = ?, updated = ? WHERE name = ?", (state, time.time(), app)
            )

    def apps(self) -> list[AppRow]:
        rows = self._reader.execute("SELECT name, version, state, updated FROM apps ORDER BY name")
        return [AppRow(*row) for row in rows]

    def app(self, name: str) -> AppRow | None:
        row = self._reader.execute(
            "SELECT name, version, state, updated FROM apps WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else AppRow(*row)

    def web_ports(self) -> dict[str, int]:
        """The port of each deployed web endpoint (``"app/function"``)."""
        return dict(self._reader.execute("SELECT endpoint, port FROM web_ports"))

    def set_web_port(self, endpoint: str, port: int) -> None:
        with self._reader:
            self._reader.execute("INSERT OR REPLACE INTO web_ports VALUES (?, ?)", (endpoint, port))

    def forget_web_port(self, endpoint: str) -> None:
        with self._reader:
            self._reader.execute("DELETE FROM web_ports WHERE endpoint = ?", (endpoint,))

    def versions(self, app: str) -> list[VersionRow]:
        rows = self._reader.execute(
            "SELECT app, version, bundle, functions, created, client FROM versions "
            "WHERE app = ? ORDER BY version",
            (app,),
        )
        return [VersionRow(a, v, b, bytes(f), c, cl) for a, v, b, f, c, cl in rows]

    # -- sandboxes ------------------------------------------------------------------

    def put_sandbox(self, row: dict[str, Any]) -> None:
        """Keep sandbox ``row`` (``describe()``'s fields); at most :data:`SANDBOXES_KEPT`
        ended ones are kept, the oldest going first."""
        with self._reader:
            self._reader.execute(
                "INSERT OR REPLACE INTO sandboxes VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, '')",
                (
                    row["object_id"],
                    row["app"],
                    row["name"],
                    json.dumps(row["tags"]),
                    json.dumps(row["command"]),
                    row["created"],
                ),
            )
            self._reader.execute(
                "DELETE FROM sandboxes WHERE id IN (SELECT id FROM sandboxes WHERE ended IS NOT "
                "NULL ORDER BY ended DESC LIMIT -1 OFFSET ?)",
                (SANDBOXES_KEPT,),
            )

    def end_sandbox(self, object_id: str, returncode: int | None, reason: str) -> None:
        with self._reader:
            self._reader.execute(
                "UPDATE sandboxes SET ended = ?, returncode = ?, reason = ? WHERE id = ?",
                (time.time(), returncode, reason, object_id),
            )

    def set_sandbox_tags(self, object_id: str, tags: dict[str, str]) -> None:
        with self._reader:
            self._reader.execute(
                "UPDATE sandboxes SET tags = ? WHERE id = ?", (json.dumps(tags), object_id)
            )

    def end_lost_sandboxes(self) -> int:
        """Mark ended the sandboxes a server that stopped or died left running (they
        end with it); how many."""
        with self._reader:
            found = self._reader.execute(
                "UPDATE sandboxes SET ended = ?, returncode = 137, reason = 'server stopped' "
                "WHERE ended IS NULL",
                (time.time(),),
            )
        return found.rowcount

    def sandbox(self, object_id: str) -> dict[str, Any] | None:
        row = self._reader.execute(
            f"SELECT {_SANDBOX_COLUMNS} FROM sandboxes WHERE id = ?", (object_id,)
        ).fetchone()
        return None if row is None else _sandbox_row(row)

    def sandboxes(self, app: str = "") -> list[dict[str, Any]]:
        """Every kept sandbox (of ``app``), oldest first."""
        rows = self._reader.execute(
            f"SELECT {_SANDBOX_COLUMNS} FROM sandboxes WHERE ? = '' OR app = ? ORDER BY created",
            (app, app),
        )
        return [_sandbox_row(row) for row in rows]

    # -- durable calls -----------------------------------------------------------

    def add_calls(self, calls: list[StoredCall], then: Callable[[], None]) -> None:
        """Store new spawns in the next group commit, then call ``then``."""
        rows = [(c.id, c.app, c.function, c.method, c.parameters, c.args, c.created) for c in calls]

        def insert(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO calls VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, ?, NULL)", rows
            )

        self.write(insert, then)

    def finish_call(
        self, call_id: str, status: int, result: bytes, then: Callable[[], None]
    ) -> None:
        """Store the outcome of spawn ``call_id`` (its arguments are dropped) with the
        others that end in this loop turn (one statement for all); then call ``then``.
        Call on the store's loop."""
        if not self._finishing:
            asyncio.get_running_loop().call_soon(self._write_finished)
        self._finishing.append(((status, result, time.time(), call_id), then))

    def _write_finished(self) -> None:
        batch, self._finishing = self._finishing, []
        if not batch:
            return
        rows = [row for row, _ in batch]

        def update(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE calls SET status = ?, result = ?, finished = ?, args = NULL WHERE id = ?",
                rows,
            )

        def stored() -> None:
            for _, then in batch:
                then()

        self.write(update, stored)

    def call(self, call_id: str) -> StoredCall | None:
        row = self._reader.execute("SELECT * FROM calls WHERE id = ?", (call_id,)).fetchone()
        return None if row is None else _call(row)

    def pending_calls(self) -> Iterator[StoredCall]:
        """Every stored spawn without an outcome, oldest first."""
        rows = self._reader.execute(
            "SELECT * FROM calls WHERE finished IS NULL ORDER BY created"
        ).fetchall()
        return (_call(row) for row in rows)

    def expire_calls(self, before: float) -> None:
        """Forget outcomes recorded before ``before`` (a wall-clock time)."""

        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM calls WHERE finished < ?", (before,))

        self.write(delete)


def _call(row: tuple[Any, ...]) -> StoredCall:
    cid, app, function, method, parameters, args, status, result, created, finished = row
    return StoredCall(
        cid,
        app,
        function,
        method,
        bytes(parameters),
        None if args is None else bytes(args),
        status,
        None if result is None else bytes(result),
        created,
        finished,
    )


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level="DEFERRED")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def _run_all(callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        callback()


def lock_home(home: str) -> int:
    """Hold ``home``'s lock for this process's life (the kernel drops it at exit).

    Raises:
        ExecutionError: another process holds it.
    """
    fd = os.open(os.path.join(home, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        owner = lock_owner(home)
        raise ExecutionError(
            f"another Shoal process (pid {owner or '?'}: a server, or a run using named "
            f"objects) owns {home}; stop it, or give this one another SHOAL_HOME"
        ) from None
    os.ftruncate(fd, 0)  # who owns it, for others' messages
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def lock_owner(home: str) -> int | None:
    """The pid written in ``home``'s lock file by the process that took it last."""
    with contextlib.suppress(OSError, ValueError):
        with open(os.path.join(home, "lock")) as file:
            return int(file.read().strip() or 0) or None
    return None


def home_locked(home: str) -> bool:
    """Whether some process holds ``home``'s lock now (a look: it may change at once)."""
    try:
        fd = os.open(os.path.join(home, "lock"), os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock taken here
    return False


#: Ended sandboxes the store keeps (for ``shoal sandbox list --all`` and ``from_id``).
SANDBOXES_KEPT: Final = 10_000
_SANDBOX_COLUMNS: Final = "id, app, name, tags, command, created, ended, returncode, reason"


def _sandbox_row(row: tuple[Any, ...]) -> dict[str, Any]:
    """A stored sandbox as ``describe()`` gives a live one, with when it ended."""
    object_id, app, name, tags, command, created, ended, returncode, reason = row
    return {
        "object_id": object_id,
        "app": app,
        "name": name,
        "tags": json.loads(tags),
        "command": json.loads(command),
        "created": created,
        "ended": ended,
        "returncode": returncode,
        "reason": reason,
    }
