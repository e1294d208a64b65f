"""Asking before a command destroys something: ``-y/--yes`` skips the question.

Deleting a volume, Dict, Queue or secret, and stopping an app or a container, ask on
the terminal first, as Modal's commands do. With no terminal to ask on (a script, CI)
they refuse and say to pass ``--yes``, rather than act unasked.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def yes_option(fn: F) -> F:
    """The ``-y/--yes`` flag of a destructive command."""
    decorate = click.option(
        "-y", "--yes", is_flag=True, default=False, help="Do it without asking first."
    )
    return decorate(fn)


def confirm(question: str, yes: bool) -> None:
    """Ask ``question`` unless ``yes``; return only when the answer is yes.

    Raises:
        click.Abort: the user said no.
        click.ClickException: there is no terminal to ask on.
    """
    if yes:
        return
    if not sys.stdin.isatty():
        raise click.ClickException(f"{question} Nothing done: no terminal to ask on; pass --yes")
    click.confirm(question, default=False, abort=True)
