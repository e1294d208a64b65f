"""Pickling of arguments, results and exceptions, with size limits.

Payloads are cloudpickle bytes, unpickled only by the side that called: the
caller unpickles results and exceptions, a container its arguments. A server
never unpickles what a container sends (a container runs other people's code,
and unpickling can run code): a failed input's output is the container's pickle
of the exception plus a msgpack description the container computes
(:func:`dump_failure`), and the server decides and reports with the description
alone (:func:`read_failure`, :func:`described_error`). At the caller the
exception is rebuilt with its own type and the remote traceback attached as a
note, or, when its class cannot be rebuilt there, replaced by a
:class:`RemoteError` that carries the same text.
"""

from __future__ import annotations

import concurrent.futures
import os
import pickle
import threading
import traceback
import types
from typing import Any, Final

import cloudpickle
import msgpack

from shoal import settings
from shoal.exception import DeserializationError, RemoteError, RequestSizeError, SerializationError

#: Source folders whose frames lead up to the user's code and say nothing to the user.
_RUNTIME_DIRS: Final = (
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,
    os.path.dirname(os.path.abspath(concurrent.futures.__file__)) + os.sep,
)


#: This process's payload limit when it is fixed for its life (a container: see
#: :func:`pin_limit`); None in callers, which read SHOAL_MAX_PAYLOAD_BYTES at each pickle.
_pinned_limit: int | None = None


def pin_limit() -> None:
    """Fix SHOAL_MAX_PAYLOAD_BYTES for the rest of this process, as it is now.

    A container's limit is its control plane's, given at its start; reading the
    environment again at every pickle costs it microseconds per input.
    """
    global _pinned_limit
    _pinned_limit = settings.max_payload_bytes()


def limit() -> int:
    """The largest payload, in bytes, this process may send (SHOAL_MAX_PAYLOAD_BYTES)."""
    return settings.max_payload_bytes() if _pinned_limit is None else _pinned_limit


#: Types the standard pickler handles exactly as cloudpickle does, only faster.
_PLAIN: Final = frozenset({int, float, complex, str, bytes, bool, type(None)})


def _is_plain(obj: Any, depth: int) -> bool:
    """Whether ``obj`` is built only of plain values (small containers, a few levels deep)."""
    kind = type(obj)
    if kind in _PLAIN:
        return True
    if depth >= 3 or kind not in (tuple, list, dict) or len(obj) > 32:
        return False
    if kind is dict:
        return all(type(k) is str and _is_plain(v, depth + 1) for k, v in obj.items())
    return all(_is_plain(item, depth + 1) for item in obj)


def dumps(obj: Any, what: str) -> bytes:
    """Pickle ``obj``.

    Args:
        obj: anything cloudpickle can pickle.
        what: names the payload in errors, e.g. "arguments of f".

    Raises:
        SerializationError: ``obj`` cannot be pickled.
        RequestSizeError: the pickle is larger than SHOAL_MAX_PAYLOAD_BYTES.
    """
    try:
        if _is_plain(obj, 0):
            data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        else:
            data = cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise SerializationError(f"cannot pickle {what}: {exc!r}") from exc
    most = limit()
    if len(data) > most:
        raise RequestSizeError(
            f"{what} pickle to {len(data)} bytes, over the limit of {most} "
            "(SHOAL_MAX_PAYLOAD_BYTES)"
        )
    return data


def _reraise_interrupt(exc: BaseException) -> None:
    """Let a real Ctrl-C through: a KeyboardInterrupt on the main thread is the user's."""
    if isinstance(exc, KeyboardInterrupt) and threading.current_thread() is threading.main_thread():
        raise exc


def loads(data: bytes, what: str) -> Any:
    """Unpickle ``data``.

    Unpickling runs code the payload names, so it may raise anything, ``SystemExit``
    included; every such failure (bar a Ctrl-C on the main thread) becomes a
    :class:`DeserializationError`, so a payload can never stop the thread or event
    loop that reads it.

    Raises:
        DeserializationError: the bytes cannot be unpickled here (a class that
            does not exist on this side, a broken pickle, a ``__reduce__`` that raises).
    """
    try:
        return pickle.loads(data)
    except BaseException as exc:
        _reraise_interrupt(exc)
        raise DeserializationError(f"cannot unpickle {what}: {exc!r}") from None


def _user_frames(tb: types.TracebackType | None) -> types.TracebackType | None:
    """Skip the leading frames of Shoal's runtime and the thread pool: the user's
    traceback starts at the user's function."""
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_RUNTIME_DIRS):
        tb = tb.tb_next
    return tb


#: Characters of a remote traceback kept when an exception is too large to send whole.
_TEXT_KEPT: Final = 16 * 1024


def _traceback_text(exc: BaseException) -> str:
    tb = _user_frames(exc.__traceback__) or exc.__traceback__
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _pickled_exception(exc: BaseException, text: str) -> bytes:
    """Pickle ``exc`` together with its formatted traceback ``text``.

    An exception that cannot be pickled, or whose pickle is over
    SHOAL_MAX_PAYLOAD_BYTES, is sent as a :class:`RemoteError` with its text (cut
    to its first and last few kilobytes when large), so the caller always learns
    what happened and the message always fits in a frame.
    """
    limit = settings.max_payload_bytes()
    try:
        data: bytes = cloudpickle.dumps((exc, text), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        data = b""
    if data and len(data) <= limit:
        return data
    summary = _shorten(f"{type(exc).__name__}: {exc}")
    if data:
        summary = (
            f"{summary}\n(the exception pickles to {len(data)} bytes, over the limit of "
            f"{limit}, SHOAL_MAX_PAYLOAD_BYTES, so only its text is sent)"
        )
    stand_in = RemoteError(summary)
    small: bytes = cloudpickle.dumps((stand_in, _shorten(text)), protocol=pickle.HIGHEST_PROTOCOL)
    return small


def dump_failure(exc: BaseException) -> bytes:
    """A failed input's output, as the container sends it: msgpack of the exception's
    description (its type, message, traceback text, and whether running the input again
    may help: not for SystemExit and other non-``Exception`` exits) and its pickle."""
    text = _traceback_text(exc)
    kind = type(exc)
    description = {
        "type": f"{kind.__module__}.{kind.__qualname__}",
        "message": _shorten(_text_of(exc)),
        "traceback": _shorten(text),
        "retryable": isinstance(exc, Exception),
    }
    data: bytes = msgpack.packb(
        {"error": description, "pickle": _pickled_exception(exc, text)}, use_bin_type=True
    )
    return data


def _text_of(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception as failed:  # a user's __str__ that raises
        return f"<str() failed: {failed!r}>"


def read_failure(data: bytes) -> tuple[dict[str, Any], bytes | None]:
    """A failed output's description and the container's pickle (None when it sent
    none), without unpickling anything; a malformed one is described as such."""
    try:
        body = msgpack.unpackb(data, raw=False)
        description, pickled = body["error"], body["pickle"]
        fields = (description["type"], description["message"], description["traceback"])
        if not all(isinstance(f, str) for f in fields) or not isinstance(pickled, bytes):
            raise TypeError("fields of the wrong types")
        retryable = bool(description.get("retryable", True))
    except Exception as exc:
        malformed = f"the container sent a malformed failure ({type(exc).__name__}: {exc})"
        return {"type": "", "message": malformed, "traceback": "", "retryable": False}, None
    return {**description, "retryable": retryable}, pickled or None


def described_error(description: dict[str, Any], context: str) -> RemoteError:
    """The server's stand-in for a function's exception: its type and message, and the
    remote traceback as a note (the caller rebuilds the real one from the pickle)."""
    kind = str(description.get("type") or "an exception")
    error = RemoteError(f"{context} raised {kind}: {description.get('message', '')}")
    text = str(description.get("traceback") or "")
    if text.strip():
        error.add_note(f"\nRemote traceback ({context}):\n{text.rstrip()}")
    return error


def dump_error(error: BaseException) -> bytes:
    """``error``, raised on this side, as :func:`load_exception` reads it elsewhere.

    Unlike :func:`dump_failure`'s pickle no traceback text goes with it (any note it
    carries already says where it came from); an error that cannot be pickled
    goes as a :class:`RemoteError` with its text.
    """
    try:
        data: bytes = dumps((error, ""), "error")
    except Exception:
        data = dumps((RemoteError(f"{type(error).__name__}: {error}"), ""), "error")
    return data


def _shorten(text: str) -> str:
    if len(text) <= 2 * _TEXT_KEPT:
        return text
    cut = len(text) - 2 * _TEXT_KEPT
    return f"{text[:_TEXT_KEPT]}\n... ({cut} characters cut) ...\n{text[-_TEXT_KEPT:]}"


def load_exception(data: bytes, context: str) -> BaseException:
    """Rebuild an exception from its pickle (:func:`dump_failure`'s, or :func:`dump_error`).

    Args:
        data: the bytes.
        context: names the function and input, added to the note.

    Returns:
        The exception with its own type, and a note holding the remote traceback.
        An exception whose class cannot be unpickled here comes back as
        :class:`RemoteError` with the traceback in its message. So does one that is
        not an ``Exception`` (``SystemExit``, ``KeyboardInterrupt``, any other
        ``BaseException``): raised at the caller it would stop the caller's thread
        or Shoal's event loop, so, as Modal does, it fails the input instead.
    """
    try:
        exc, text = pickle.loads(data)
    except BaseException as load_error:
        _reraise_interrupt(load_error)
        return RemoteError(
            f"{context} failed with an exception that cannot be rebuilt here ({load_error!r})"
        )
    if isinstance(exc, Exception):
        if text.strip():
            exc.add_note(f"\nRemote traceback ({context}):\n{text.rstrip()}")
        return exc
    if isinstance(exc, BaseException):
        return RemoteError(f"{context} raised {exc!r}, which ends the input as a failure:\n{text}")
    return RemoteError(f"{context} failed:\n{text}")
