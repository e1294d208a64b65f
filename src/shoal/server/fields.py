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
