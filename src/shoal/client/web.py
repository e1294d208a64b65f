"""Decorators that make a function a web endpoint: each HTTP request becomes one input.

Stack them below ``@app.function`` (and ``@shoal.concurrent``)::

    @app.function(max_containers=4)
    @shoal.concurrent(max_inputs=100)
    @shoal.fastapi_endpoint(method="POST")
    async def predict(item: dict) -> dict: ...

They record a small dict on the function (:data:`shoal.protocol.markers.WEB`);
the container builds the ASGI app from it and the gateway routes requests to the
function's pool (``shoal serve``, or ``shoal run`` while the entrypoint runs).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from shoal.exception import InvalidError
from shoal.protocol import markers

F = TypeVar("F", bound=Callable[..., Any])

#: HTTP methods a fastapi_endpoint may take.
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


def _mark(spec: dict[str, Any]) -> Callable[[F], F]:
    def decorate(fn: F) -> F:
        if getattr(fn, markers.RAW, None) is not None:
            raise InvalidError("put web decorators below @app.function, not above it")
        setattr(fn, markers.WEB, spec)
        return fn

    return decorate


def fastapi_endpoint(
    *,
    method: str = "GET",
    docs: bool = False,
    requires_auth: bool = False,
    requires_proxy_auth: bool = False,
) -> Callable[[F], F]:
    """Serve the function as a JSON endpoint: query parameters and JSON bodies map to
    its arguments as FastAPI maps them; its return value is the JSON response.

    ``docs=True`` also serves ``/docs``; ``requires_auth=True`` refuses requests
    without the token ``shoal serve`` prints (401). ``requires_proxy_auth``, Modal's
    name for its own proxy's check, means the same here.
    """
    if method.upper() not in _METHODS:
        raise InvalidError(f"method={method!r}: must be one of {sorted(_METHODS)}")
    spec = {"kind": "fastapi", "method": method.upper(), "docs": docs}
    return _mark({**spec, "requires_auth": requires_auth or requires_proxy_auth})


def web_endpoint(
    *,
    method: str = "GET",
    docs: bool = False,
    requires_auth: bool = False,
    requires_proxy_auth: bool = False,
) -> Callable[[F], F]:
    """Modal's older name for :func:`fastapi_endpoint` (Modal now refuses it); here it
    still works, with a ``FutureWarning``, so older scripts run."""
    warnings.warn(
        "@shoal.web_endpoint has been renamed to @shoal.fastapi_endpoint",
        FutureWarning,  # shown by default: the user's code should change
        stacklevel=2,
    )
    return fastapi_endpoint(
        method=method,
        docs=docs,
        requires_auth=requires_auth,
        requires_proxy_auth=requires_proxy_auth,
    )


def asgi_app(*, requires_auth: bool = False, requires_proxy_auth: bool = False) -> Callable[[F], F]:
    """The function returns an ASGI app; it is built once per container and serves
    every request (and websocket) routed to the function."""
    return _mark({"kind": "asgi", "requires_auth": requires_auth or requires_proxy_auth})


def wsgi_app(*, requires_auth: bool = False, requires_proxy_auth: bool = False) -> Callable[[F], F]:
    """The function returns a WSGI app; it is built once per container."""
    return _mark({"kind": "wsgi", "requires_auth": requires_auth or requires_proxy_auth})


def web_server(
    port: int,
    *,
    startup_timeout: float = 5.0,
    requires_auth: bool = False,
    requires_proxy_auth: bool = False,
) -> Callable[[F], F]:
    """The function starts a server of its own on ``port`` inside the container (and
    returns); requests are proxied to it once it accepts connections."""
    if not (isinstance(port, int) and 0 < port < 65536):
        raise InvalidError(f"port={port!r}: must be 1..65535")
    spec = {"kind": "web_server", "port": port, "startup_timeout": startup_timeout}
    return _mark({**spec, "requires_auth": requires_auth or requires_proxy_auth})


def web_spec(fn: Any) -> dict[str, Any] | None:
    """What a web decorator recorded on ``fn``, if any."""
    found = getattr(fn, markers.WEB, None)
    return found if isinstance(found, dict) else None
