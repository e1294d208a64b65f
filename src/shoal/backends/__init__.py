"""Where container processes run. Each backend is imported only when asked for."""

from __future__ import annotations

from shoal.backends.base import Backend
from shoal.exception import InvalidError


def get_backend(name: str) -> Backend:
    """Return a new backend by name (``"local"``).

    Raises:
        InvalidError: no backend has that name.
    """
    if name == "local":
        from shoal.backends.local import LocalBackend

        return LocalBackend()
    raise InvalidError(f"unknown backend {name!r}; available: 'local'")
