"""Where container processes run: a registry of backends, each imported only when asked
for. ``SHOAL_BACKEND`` (or ``shoal server --backend NAME``) picks one; another package
adds its own with :func:`register`."""

from __future__ import annotations

import importlib

from shoal import settings
from shoal.backends.base import Backend
from shoal.exception import InvalidError

#: Each backend's name, and where its class is: ``module:Class``.
_REGISTRY: dict[str, str] = {"local": "shoal.backends.local:LocalBackend"}


def register(name: str, where: str) -> None:
    """Make backend ``name`` available; ``where`` is ``module:Class`` (imported on use).

    Raises:
        InvalidError: ``where`` is not of that form.
    """
    module, _, cls = where.partition(":")
    if not module or not cls:
        raise InvalidError(f"backend {name!r}: expected module:Class, got {where!r}")
    _REGISTRY[name] = where


def names() -> list[str]:
    """Every registered backend's name."""
    return sorted(_REGISTRY)


def get_backend(name: str | None = None) -> Backend:
    """Return a new backend by name (default: ``SHOAL_BACKEND``, ``local``).

    Raises:
        InvalidError: no backend has that name, or its class is not a Backend.
    """
    chosen = name or settings.backend()
    where = _REGISTRY.get(chosen)
    if where is None:
        available = ", ".join(repr(n) for n in names())
        raise InvalidError(f"unknown backend {chosen!r}; available: {available}")
    module, _, cls = where.partition(":")
    found = getattr(importlib.import_module(module), cls, None)
    if not (isinstance(found, type) and issubclass(found, Backend)):
        raise InvalidError(f"backend {chosen!r} ({where}) is not a shoal Backend")
    made: Backend = found()
    return made
