"""Every error Shoal raises at the caller, in one shallow tree.

Users catch these by name, so the names follow Modal's ``modal.exception``::

    Error
     ├── InvalidError             a bad option or argument, found before anything runs
     ├── ExecutionError           the app cannot run the call (not running, shut down)
     ├── NotFoundError            no deployed app, function or stored call of that name
     ├── AuthError                the server refused the client's token
     ├── ConnectionError          no server answers where the client was told to look
     ├── ImageBuildError          an image's build step failed (its output says why)
     ├── SerializationError       arguments or a result could not be pickled
     ├── DeserializationError     a payload could not be unpickled on the other side
     ├── RequestSizeError         a payload is larger than SHOAL_MAX_PAYLOAD_BYTES
     ├── RemoteError              a remote exception that cannot be rebuilt at the caller
     ├── ContainerInitError       the container could not load the user's code
     ├── ContainerCrashError      containers died under the input until retries ran out
     └── FunctionTimeoutError     an input ran past ``timeout`` (also a TimeoutError)
    InputCancellation (BaseException)  the input was cancelled

Context (function name, input id) is attached once, where the error crosses back to
the caller.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any


class Error(Exception):
    """Raised as the base of every Shoal error; catch it to catch them all."""


class InvalidError(Error):
    """Raised when an option or argument is invalid; nothing was queued."""


class ExecutionError(Error):
    """Raised when a call cannot run, e.g. the app is not running."""


class NotFoundError(Error):
    """Raised when a looked-up app, function, class or call id does not exist."""


class AuthError(Error):
    """Raised when a server refuses the client's access token."""


class ConnectionError(Error):
    """Raised when no server answers at the configured address."""


class ImageBuildError(Error):
    """Raised when an image cannot be built; the message ends with the failing step's
    own output (pip's error for a bad package name)."""


class SerializationError(Error):
    """Raised when arguments or a result cannot be pickled."""


class DeserializationError(Error):
    """Raised when a payload cannot be unpickled where it arrived."""


class RequestSizeError(Error):
    """Raised when a pickled payload exceeds the configured size limit."""


class RemoteError(Error):
    """Raised in place of a remote exception that cannot be rebuilt at the caller."""


class ContainerInitError(Error):
    """Raised when a container cannot import the user's module or find the function."""


class ContainerCrashError(Error):
    """Raised when containers died while running an input until its retries ran out."""


class FunctionTimeoutError(Error, TimeoutError):
    """Raised when an input runs longer than the function's ``timeout``."""


class SandboxTerminatedError(Error):
    """Raised by ``Sandbox.wait()`` for a sandbox that was terminated, or whose
    processes were killed (over its memory limit, or by what ran inside)."""


class SandboxTimeoutError(Error, TimeoutError):
    """Raised by ``Sandbox.wait()`` for a sandbox that reached its timeout."""


class InputCancellation(BaseException):
    """Raised when the input was cancelled (``FunctionCall.cancel``).

    A ``BaseException`` so that a user's ``except Exception:`` cannot swallow it.
    """


def to_wire(exc: Exception) -> dict[str, str]:
    """How a failed request's reply describes ``exc``: its kind and message (for an error
    that is not one of Shoal's, a bug, where it was raised too)."""
    error = {"kind": type(exc).__name__, "message": str(exc)}
    if not isinstance(exc, Error):
        error["message"] += "\n" + "".join(traceback.format_exception(exc))
    return error


def from_wire(body: Any) -> BaseException:
    """The error a failed request's reply body describes (see :func:`to_wire`): Shoal's
    own kind, or an ExecutionError for any other."""
    kind = body.get("kind") if isinstance(body, dict) else None
    message = str(body.get("message", body)) if isinstance(body, dict) else str(body)
    cls = getattr(sys.modules[__name__], str(kind), None)
    if isinstance(cls, type) and issubclass(cls, Error):
        return cls(message)
    return ExecutionError(f"the server failed: {kind}: {message}")
