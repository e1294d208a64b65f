"""Where container processes run: a registry of backends, each imported only when asked
for. ``SHOAL_BACKEND`` (or ``shoal server --backend NAME``) picks one; another package
adds its own with :func:`register`."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from shoal import settings
from shoal.backends.base import Backend
from shoal.exception import InvalidError

#: Each backend's name, and where its class is: ``module:Class``.
_REGISTRY: dict[str, str] = {
    "local": "shoal.backends.local:LocalBackend",
    "ray": "shoal.backends.ray:RayBackend",
}


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


def get_backend(name: str | None = None, address: str | None = None) -> Backend:
    """Return a new backend by name (default: ``SHOAL_BACKEND``, ``local``); ``address``
    names the cluster of a cluster backend (``--ray-address``).

    Raises:
        InvalidError: no backend has that name, or its class is not a Backend, or it
            cannot be imported (its extra is not installed: the message says which).
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
    factory: Callable[..., Backend] = found  # a cluster backend takes its address
    made = factory() if address is None else factory(address)
    return made
