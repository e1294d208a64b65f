"""Loads the user's function inside a container, the counterpart of the caller's CodeRef.

The caller's ``__main__`` is loaded under ``MAIN_MODULE_ALIAS`` (so its
``if __name__ == "__main__":`` block does not run) and aliased as ``__main__``,
so objects the caller pickled from its script unpickle here.
"""

from __future__ import annotations

import importlib
import importlib.util
import pickle
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any

from shoal.protocol.messages import MAIN_MODULE_ALIAS, Load


class LoadError(Exception):
    """The function could not be loaded; the message says why, for the caller."""


def load_function(load: Load) -> Callable[..., Any]:
    """Import the user's code and return the plain function ``load`` names.

    Raises:
        LoadError: the function is not in the module (its import errors propagate
            as they are, so the caller sees the real traceback).
    """
    if load.module_kind == "serialized":
        _extend_path(load.sys_path)
        assert load.serialized is not None
        return _unwrap(pickle.loads(load.serialized))
    module = load_module(load.module_kind, load.module_name, load.module_file, load.sys_path)
    obj: Any = module
    for part in load.qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise LoadError(
                f"function {load.qualname!r} not found in module {load.module_name!r} "
                f"({load.module_file}); define it at module level or use serialized=True"
            ) from None
    return _unwrap(obj)


def load_module(kind: str, name: str, file: str, sys_path: Sequence[str]) -> types.ModuleType:
    """Import the user's module the way the caller knows it (see the module docstring).

    A module already loaded (by the fork server, before this container was
    forked from it) is reused. A module whose import fails leaves nothing behind
    in ``sys.modules``, so a later attempt runs it again.
    """
    _extend_path(sys_path)
    if kind == "import":
        return importlib.import_module(name)
    alias = MAIN_MODULE_ALIAS if kind == "main" else name
    loaded = sys.modules.get(alias)
    if loaded is not None and getattr(loaded, "__file__", None) == file:
        return loaded
    spec = importlib.util.spec_from_file_location(alias, file)
    if spec is None or spec.loader is None:
        raise LoadError(f"cannot load {file!r} as a module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[alias] = module
    previous_main = sys.modules.get("__main__")
    if kind == "main":
        sys.modules["__main__"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(alias, None)
        if kind == "main" and previous_main is not None:
            sys.modules["__main__"] = previous_main
        raise
    return module


def _extend_path(entries: Sequence[str]) -> None:
    for entry in reversed(entries):
        if entry not in sys.path:
            sys.path.insert(0, entry)


def _unwrap(obj: Any) -> Callable[..., Any]:
    """Return the user's function from a Shoal handle, or ``obj`` if it is one already."""
    raw = getattr(obj, "__shoal_raw_function__", obj)
    if not callable(raw):
        raise LoadError(f"{obj!r} is not callable")
    return raw  # type: ignore[no-any-return]
