"""Reading the fields of a request body (a msgpack map from a client or a container)."""

from __future__ import annotations

from typing import Any

from shoal.exception import InvalidError


def text(body: dict[str, Any], key: str) -> str:
    """``body[key]``, a non-empty string.

    Raises:
        InvalidError: missing, or not one.
    """
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidError(f"{key}: expected a non-empty string")
    return value


def data(body: dict[str, Any], key: str) -> bytes:
    """``body[key]``, bytes.

    Raises:
        InvalidError: missing, or not bytes.
    """
    value = body.get(key)
    if not isinstance(value, bytes):
        raise InvalidError(f"{key}: expected bytes")
    return value


def whole(body: dict[str, Any], key: str) -> int:
    """``body[key]``, a whole number >= 0 (0 when missing).

    Raises:
        InvalidError: not one.
    """
    value = body.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidError(f"{key}: expected a whole number >= 0")
    return value


def seconds(body: dict[str, Any], key: str) -> float:
    """``body[key]``, a number of seconds >= 0 (0 when missing).

    Raises:
        InvalidError: not one.
    """
    value = body.get(key, 0)
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise InvalidError(f"{key}: expected seconds >= 0")
    return float(value)
