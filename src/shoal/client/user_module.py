"""Where the caller's functions live, so a container can load the same code.

:func:`code_ref` turns a decorated function into a
:class:`~shoal.spec.function.CodeRef`; :func:`load_file` is how ``shoal run``
imports a script, recording it so containers load it the same way. Functions
that cannot be found by module and name (defined inside another function, or in
an interactive session) need ``serialized=True``.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle

from shoal.exception import InvalidError, SerializationError
from shoal.protocol.messages import MAIN_MODULE_ALIAS
from shoal.spec.function import CodeRef

#: Modules ``shoal run`` loaded from a file path (by name).
_file_modules: set[str] = set()


def load_file(path: str | os.PathLike[str]) -> types.ModuleType:
    """Import the script at ``path`` as a module named after the file.

    Its ``if __name__ == "__main__":`` block does not run. Its directory goes
    first on ``sys.path`` so its sibling modules import, as with ``python path``.

    Raises:
        InvalidError: the file does not exist or is not a ``.py`` file.
    """
    file = Path(path).resolve()
    if not file.is_file() or file.suffix != ".py":
        raise InvalidError(f"{path}: not a Python file")
    name = file.stem
    folder = str(file.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise InvalidError(f"{path}: cannot be loaded as a module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    _file_modules.add(name)
    spec.loader.exec_module(module)
    return module


def alias_main() -> None:
    """Make the caller's ``__main__`` reachable as :data:`MAIN_MODULE_ALIAS`.

    A container loads the caller's script under that name, so values it pickles
    by reference to the script's classes unpickle here.
    """
    main = sys.modules.get("__main__")
    if main is not None and MAIN_MODULE_ALIAS not in sys.modules:
        sys.modules[MAIN_MODULE_ALIAS] = main


def code_ref(fn: Callable[..., Any], *, serialized: bool) -> CodeRef:
    """Describe how a container finds ``fn``.

    Raises:
        InvalidError: ``fn`` cannot be found by name and ``serialized`` is off.
        SerializationError: ``serialized`` is on and ``fn`` cannot be pickled.
    """
    path = tuple(p for p in sys.path if p)
    if serialized:
        try:
            data = cloudpickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise SerializationError(f"cannot pickle function {fn.__qualname__}: {exc!r}") from exc
        return CodeRef(
            module_kind="serialized",
            module_name=fn.__module__,
            module_file="",
            sys_path=path,
            qualname=fn.__qualname__,
            serialized=data,
        )
    module = sys.modules.get(fn.__module__)
    file = getattr(module, "__file__", None)
    if "<locals>" in fn.__qualname__ or module is None or file is None:
        raise InvalidError(
            f"function {fn.__qualname__} is not defined at the top level of a module file, so "
            "a container cannot import it; move it there or use serialized=True"
        )
    name = module.__name__
    if name == "__main__":
        kind = "main"
    elif name in _file_modules:
        kind = "file"
    else:
        kind = "import"
        root = import_root(name, Path(file))
        if root is not None and root not in path:
            path = (root, *path)
    return CodeRef(
        module_kind=kind,
        module_name=name,
        module_file=str(Path(file).resolve()),
        sys_path=path,
        qualname=fn.__qualname__,
    )


def import_root(name: str, file: Path) -> str | None:
    """The ``sys.path`` entry from which ``import name`` finds ``file``."""
    depth = name.count(".") + 1
    if file.stem == "__init__":
        depth += 1
    root = file.resolve().parents[depth - 1] if depth <= len(file.resolve().parents) else None
    return None if root is None else str(root)


#: Folders whose modules are installed packages or caches, not the app's own code.
_NOT_LOCAL = frozenset({"site-packages", "dist-packages", ".venv", "venv", "__pycache__"})


def local_files(folder: Path) -> list[str]:
    """Source files of the modules loaded from ``folder``: the app and its local imports."""
    found = set()
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if not file or not file.endswith(".py"):
            continue
        path = Path(file).resolve()
        if module.__name__.partition(".")[0] == "shoal":
            continue  # the runtime itself: installed wherever the app runs
        if path.is_relative_to(folder):
            inside = path.relative_to(folder).parts[:-1]
            if not any(part in _NOT_LOCAL or part.startswith(".") for part in inside):
                found.add(str(path))
    return sorted(found)
