"""Attributes by which the caller's decorators mark user code for the container.

``@shoal.enter()``, ``@shoal.method()``, ``@shoal.batched(...)`` and friends only
set these attributes on the user's functions; the container reads them after
importing the user's module. Both sides import this module, so the names cannot
drift apart.
"""

from __future__ import annotations

from typing import Final

#: On a function inside an ``@app.cls`` class: "enter", "exit" or "method".
ROLE: Final = "__shoal_role__"
#: On a function or method: ``(max_batch_size, wait_ms)`` from ``@shoal.batched``.
BATCHED: Final = "__shoal_batched__"
#: On a function: a :class:`WebSpec`-like dict from ``@shoal.fastapi_endpoint`` and friends.
WEB: Final = "__shoal_web__"
#: On a Shoal handle: the user's undecorated function or class.
RAW: Final = "__shoal_raw_function__"

#: On a ``shoal.parameter()`` declaration (a class attribute); its ``default`` attribute
#: is the default, ``required`` says whether there is none.
PARAMETER: Final = "__shoal_parameter__"

ENTER: Final = "enter"
EXIT: Final = "exit"
METHOD: Final = "method"


def is_method(member: object) -> bool:
    """Whether a class member runs as a method: ``@shoal.method()``, or ``@shoal.batched``
    alone (as in Modal, a batched method needs no ``@method`` too)."""
    return getattr(member, ROLE, None) == METHOD or (
        getattr(member, ROLE, None) is None and getattr(member, BATCHED, None) is not None
    )
