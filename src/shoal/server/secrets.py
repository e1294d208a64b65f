"""Named secrets kept in a store (and the ops of ``shoal secret``).

A secret is a set of environment variables stored under a name
(``shoal secret create NAME KEY=VALUE ...``); functions refer to it with
``shoal.Secret.from_name(NAME)`` and the control plane reads it when it creates
their pool (:attr:`ControlPlane.secret_lookup`). The store is a server's, or with no
server, the caller's own on its home (as for Dicts). Values leave it only into
containers' environments: listing shows names and key names, never values, and
containers cannot ask for secrets over their channel.
"""

from __future__ import annotations

import re
import sqlite3
import time
from typing import Any, Final

import msgpack

from shoal.exception import InvalidError, NotFoundError
from shoal.server.names import check_name

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS secrets (
    name TEXT PRIMARY KEY, data BLOB NOT NULL, created REAL NOT NULL, updated REAL NOT NULL
);
"""


class Secrets:
    """Named secrets in the store's SQLite file (written at once: they are rare)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._db.executescript(_SCHEMA)
        self._db.commit()

    def handle(self, op: str, body: dict[str, Any]) -> Any:
        """Answer ``secret_create``, ``secret_list`` or ``secret_delete`` (``shoal secret``).

        Raises:
            InvalidError, NotFoundError: as :meth:`put` and :meth:`delete` say.
        """
        if op == "secret_create":
            values = body.get("values")
            if not isinstance(values, dict):
                raise InvalidError("secret_create: values must be a map")
            self.put(str(body.get("name")), values, overwrite=bool(body.get("overwrite")))
            return {}
        if op == "secret_list":
            return self.list()
        if op == "secret_delete":
            self.delete(str(body.get("name")))
            return {}
        raise InvalidError(f"unknown secret op {op!r}")

    def put(self, name: str, values: dict[str, str], *, overwrite: bool) -> None:
        """Store ``values`` under ``name``.

        Raises:
            InvalidError: the name or a key is invalid, or the secret exists and
                ``overwrite`` is off.
        """
        check_name(name, "secret")
        for key, value in values.items():
            if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise InvalidError(f"secret {name}: {key!r} is not an environment variable name")
            if not isinstance(value, str):
                raise InvalidError(f"secret {name}: the value of {key} must be a string")
        now = time.time()
        data = msgpack.packb(values, use_bin_type=True)
        with self._db:
            exists = self._db.execute("SELECT 1 FROM secrets WHERE name = ?", (name,)).fetchone()
            if exists and not overwrite:
                raise InvalidError(f"secret {name!r} exists; give --force to replace it")
            self._db.execute(
                "INSERT INTO secrets VALUES (?, ?, ?, ?) ON CONFLICT(name) DO UPDATE "
                "SET data = excluded.data, updated = excluded.updated",
                (name, data, now, now),
            )

    def get(self, name: str) -> dict[str, str]:
        """The values of secret ``name``.

        Raises:
            NotFoundError: there is none.
        """
        return read(self._db, name)

    def list(self) -> list[dict[str, Any]]:
        """Every secret: its name, key names and times (never its values)."""
        rows = self._db.execute("SELECT name, data, created, updated FROM secrets ORDER BY name")
        return [
            {
                "name": name,
                "keys": sorted(msgpack.unpackb(data, raw=False)),
                "created": created,
                "updated": updated,
            }
            for name, data, created, updated in rows
        ]

    def delete(self, name: str) -> None:
        """Forget secret ``name``.

        Raises:
            NotFoundError: there is none.
        """
        with self._db:
            gone = self._db.execute("DELETE FROM secrets WHERE name = ?", (name,)).rowcount
        if not gone:
            raise NotFoundError(f"no secret {name!r}")


def read(db: sqlite3.Connection | None, name: str) -> dict[str, str]:
    """The values of secret ``name`` in the store ``db`` (None: a store with none yet);
    readable from any process of the home's user.

    Raises:
        NotFoundError: there is none.
    """
    row = None
    if db is not None:
        row = db.execute("SELECT data FROM secrets WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise NotFoundError(
            f"no secret {name!r}; create it with `shoal secret create {name} KEY=VALUE`"
        )
    values: dict[str, str] = msgpack.unpackb(row[0], raw=False)
    return values
