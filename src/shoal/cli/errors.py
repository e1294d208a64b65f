"""How the commands show an error: the user's own frames, not Shoal's.

A call that fails in a container raises at the caller with the remote traceback as a
note; between the caller's line and that note, Python would print the frames of
Shoal's own machinery (the loop bridge, the map's bookkeeping, ``concurrent.futures``),
which say nothing to the user. :func:`print_traceback` leaves them out, chained
exceptions included. An error that stops a command before user code runs (an image
that fails to build, a secret that is missing) is one line: :func:`one_line`.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Final

import click

import shoal

#: Folders whose frames the user never needs: Shoal's package, and the parts of the
#: standard library that carry its calls between threads and loops.
_HIDDEN: Final = (
    os.path.dirname(os.path.abspath(shoal.__file__)) + os.sep,
    os.path.join(os.path.dirname(os.path.abspath(os.__file__)), "asyncio") + os.sep,
    os.path.join(os.path.dirname(os.path.abspath(os.__file__)), "concurrent") + os.sep,
)


def _trim(summary: traceback.TracebackException) -> None:
    """Drop hidden frames from ``summary`` and the exceptions chained to it (keeping the
    last frame when every one is hidden: it says where the error came from)."""
    frames = list(summary.stack)
    kept = [f for f in frames if not os.path.abspath(f.filename).startswith(_HIDDEN)]
    summary.stack = traceback.StackSummary.from_list(kept or frames[-1:])
    for chained in (summary.__cause__, summary.__context__):
        if chained is not None:
            _trim(chained)


def print_traceback(exc: BaseException) -> None:
    """Print ``exc`` as Python would, without Shoal's frames (see the module docstring)."""
    summary = traceback.TracebackException.from_exception(exc)
    _trim(summary)
    sys.stderr.write("".join(summary.format()))


def one_line(exc: BaseException) -> None:
    """Print ``exc`` as a command's one-line error."""
    click.echo(f"Error: {exc}", err=True)
