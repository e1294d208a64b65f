"""The server's own log: what it says about itself, and the container output it relays.

By default each entry is the line it has always been, on stderr (container output on
the stream it was written to, prefixed with the container's label). With
``SHOAL_LOG_FORMAT=json`` every entry is one JSON object on its own line, for a log
collector: ``time`` (ISO 8601, UTC), ``level``, ``component`` and ``message``, plus
the entry's own fields (a relayed line carries ``container``, ``stream`` and, while an
input ran, ``input``). Python's ``logging`` records of Shoal and of the HTTP server
under its gateway go the same way once :func:`configure` has run.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import sys
from typing import Any, TextIO

from shoal import settings


def structured() -> bool:
    """Whether the server's log is JSON (SHOAL_LOG_FORMAT=json)."""
    return _json()


def _json() -> bool:
    try:
        return settings.log_format() == "json"
    except ValueError:
        return False  # refused where the server starts (configure); text meanwhile


def entry(message: str, *, component: str, level: str = "info", **fields: Any) -> str:
    """The JSON line of one entry (see the module docstring)."""
    row = {
        "time": _iso(),
        "level": level,
        "component": component,
        "message": message,
        **{key: value for key, value in fields.items() if value not in (None, "")},
    }
    return json.dumps(row, separators=(",", ":"), default=str)


def say(
    message: str,
    *,
    component: str,
    level: str = "info",
    stream: TextIO | None = None,
    **fields: Any,
) -> None:
    """Write one entry of the server's log: ``message`` as it is (text), or as JSON with
    ``fields``. ``stream``: where (default stderr)."""
    out = stream if stream is not None else sys.stderr
    line = entry(message, component=component, level=level, **fields) if _json() else message
    with contextlib.suppress(ValueError, OSError):  # closed at interpreter exit
        out.write(line + "\n")
        out.flush()


def relayed(
    label: str, container_id: str, which: str, texts: list[str], ids: list[str] | None
) -> str:
    """What the server writes for lines container ``container_id`` (shown as ``label``)
    wrote to ``which``; ``ids``: each line's call, if any."""
    if not _json():
        return "".join(f"[{label}] {text}\n" for text in texts)
    calls = ids if ids is not None else [""] * len(texts)
    return "".join(
        entry(text, component="container", container=container_id, stream=which, input=call) + "\n"
        for text, call in zip(texts, calls, strict=False)
    )


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return entry(message, component=record.name, level=record.levelname.lower())


def configure() -> None:
    """Check SHOAL_LOG_FORMAT and send Python's log records of Shoal, the HTTP server
    (uvicorn) and asyncio to stderr in that format (a server calls it once, at start).

    Raises:
        ValueError: SHOAL_LOG_FORMAT is neither text nor json.
    """
    json_format = settings.log_format() == "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _JsonFormatter() if json_format else logging.Formatter("%(name)s: %(message)s")
    )
    for name in ("shoal", "uvicorn", "asyncio"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)


def _iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
