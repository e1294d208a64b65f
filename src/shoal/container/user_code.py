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
from collections.abc import Callable
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
    for entry in reversed(load.sys_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    if load.module_kind == "serialized":
        assert load.serialized is not None
        fn = pickle.loads(load.serialized)
        return _unwrap(fn)
    module = _load_module(load)
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


def _load_module(load: Load) -> types.ModuleType:
    if load.module_kind == "import":
        return importlib.import_module(load.module_name)
    name = MAIN_MODULE_ALIAS if load.module_kind == "main" else load.module_name
    spec = importlib.util.spec_from_file_location(name, load.module_file)
    if spec is None or spec.loader is None:
        raise LoadError(f"cannot load {load.module_file!r} as a module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    if load.module_kind == "main":
        sys.modules["__main__"] = module
    spec.loader.exec_module(module)
    return module


def _unwrap(obj: Any) -> Callable[..., Any]:
    """Return the user's function from a Shoal handle, or ``obj`` if it is one already."""
    raw = getattr(obj, "__shoal_raw_function__", obj)
    if not callable(raw):
        raise LoadError(f"{obj!r} is not callable")
    return raw  # type: ignore[no-any-return]
