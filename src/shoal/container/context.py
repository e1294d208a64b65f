"""What user code can ask about where it runs: the current input, local or not."""

from __future__ import annotations

import contextvars

#: The id of the input this task or thread is running; set per input by the executor.
current_input: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "shoal_current_input", default=None
)

_in_container = False


def current_input_id() -> str | None:
    """The id of the input being run, inside a container; ``None`` elsewhere.

    Correct under concurrency: each thread or task sees its own input.
    """
    return current_input.get()


def is_local() -> bool:
    """``True`` in the caller's process, ``False`` inside a container."""
    return not _in_container


def mark_container() -> None:
    """Record that this process is a container (called once, before user code loads)."""
    global _in_container
    _in_container = True
