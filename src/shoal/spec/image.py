"""What an image is to the control plane: an interpreter version and ordered build steps.

``shoal.Image`` (:mod:`shoal.client.image`) is the user's builder; each of its
methods appends one :class:`Step` to a :class:`Recipe`. The recipe is plain,
frozen data, so it travels inside a :class:`~shoal.spec.function.FunctionSpec`
to a server, and a backend turns it into an :class:`Environment` where the
containers of a function start (the local backend builds a virtual environment:
:mod:`shoal.backends.image_build`).

A recipe's :meth:`~Recipe.digest` names its build: two recipes with the same
steps (and, for steps that copy local files, the same file contents) share one
built environment.

Example::

    >>> r = Recipe(python_version="3.11", steps=(Step("pip", ("six==1.16.0",)),))
    >>> r.digest() == Recipe("3.11", (Step("pip", ("six==1.16.0",)),)).digest()
    True
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
from dataclasses import dataclass, field

#: Step kinds and what their ``args`` hold.
#: ``pip``: requirement strings, then options as ``--flag=value`` strings;
#: ``requirements``: a requirements file's path; ``pyproject``: a pyproject.toml's path,
#: then the optional dependency groups to install; ``apt``: Debian package names;
#: ``run``: shell commands; ``function``: (data) a cloudpickled callable, ``args`` its
#: folder and its qualified name; ``env``: ``KEY=VALUE`` pairs; ``workdir``: one path;
#: ``file``/``dir``: (local path, path under the image's root); ``python``: (local path,
#: module name).
STEP_KINDS = frozenset(
    {"pip", "requirements", "pyproject", "apt", "run", "function", "env", "workdir"}
    | {"file", "dir", "python"}
    | {"archive"}  # a tar of files (a sandbox's snapshot), unpacked in the image's root
)

#: What the container runtime imports, by feature of the functions an image serves, on top
#: of what every container imports (``cloudpickle``, ``msgpack``, ``rich``). Each is
#: installed in the image at the caller's version (``shoal.backends.image_build``). A
#: feature is a web endpoint's kind: ``fastapi`` (``@fastapi_endpoint``, built into a
#: FastAPI app), ``wsgi`` (``@wsgi_app``, served through a2wsgi), ``web_server`` (proxied
#: with httpx), ``asgi`` (the user's own app: nothing more).
FEATURE_PACKAGES: dict[str, tuple[str, ...]] = {
    "fastapi": ("fastapi",),
    "wsgi": ("a2wsgi",),
    "web_server": ("httpx",),
    "asgi": (),
}

#: Steps whose outcome depends on local files, which the digest reads.
_LOCAL = frozenset({"requirements", "pyproject", "file", "dir", "python"})


@dataclass(frozen=True)
class Step:
    """One build step: its kind (``STEP_KINDS``), string arguments, and opaque data."""

    kind: str
    args: tuple[str, ...] = ()
    data: bytes = b""


@dataclass(frozen=True)
class Recipe:
    """An image: the interpreter (``None``: the caller's version) and its steps."""

    python_version: str | None = None
    steps: tuple[Step, ...] = field(default=())
    #: Features of the functions the image serves (``FEATURE_PACKAGES``' keys), whose
    #: runtime packages the build installs too.
    features: tuple[str, ...] = ()

    def with_features(self, *features: str) -> Recipe:
        """This recipe for functions that also use ``features`` (web endpoint kinds).

        Raises:
            ValueError: a feature this module does not know.
        """
        unknown = set(features) - set(FEATURE_PACKAGES)
        if unknown:
            raise ValueError(f"unknown image features {sorted(unknown)}")
        return Recipe(self.python_version, self.steps, tuple(sorted({*self.features, *features})))

    def runtime_packages(self) -> tuple[str, ...]:
        """The packages the container runtime needs for this recipe's features."""
        return tuple(sorted({p for f in self.features for p in FEATURE_PACKAGES[f]}))

    def digest(self) -> str:
        """A name for the built environment: the steps, with local files' contents, and the
        features' runtime packages."""
        h = hashlib.sha256(json.dumps([self.python_version]).encode())
        if self.features:  # recipes without features keep the names they always had
            h.update(json.dumps(["features", list(self.features)]).encode())
        for step in self.steps:
            h.update(json.dumps([step.kind, list(step.args)]).encode())
            h.update(hashlib.sha256(step.data).digest())
            if step.kind in _LOCAL:
                _hash_local(h, step.args[0])
        return h.hexdigest()[:24]

    def identity(self) -> str:
        """A name for the recipe that is the same wherever the app's code is loaded (the
        caller's folder or a server's copy of it): local paths count by their last part,
        a build function by its name; features do not count, since the user's
        ``Image`` is the same. A container compares it with its own image's."""
        h = hashlib.sha256(json.dumps([self.python_version]).encode())
        for step in self.steps:
            args = list(step.args)
            if step.kind in ("function", "python"):  # by name: (folder, qualname), (path, module)
                args = args[1:]
            elif step.kind in _LOCAL:
                args[0] = os.path.basename(args[0])
            h.update(json.dumps([step.kind, args]).encode())
        return h.hexdigest()[:24]

    def env(self) -> dict[str, str]:
        """The variables the image's ``.env()`` steps set, later ones winning."""
        out: dict[str, str] = {}
        for step in self.steps:
            if step.kind == "env":
                out.update(pair.split("=", 1) for pair in step.args)  # type: ignore[misc]
        return out

    def workdir(self) -> str | None:
        """The last ``.workdir()``, where containers start (None: unchanged)."""
        found = [step.args[0] for step in self.steps if step.kind == "workdir"]
        return found[-1] if found else None


def _hash_local(h: hashlib._Hash, path: str) -> None:
    """Feed ``path``'s contents (a file, or every file under a folder) into ``h``."""
    if os.path.isfile(path):
        with open(path, "rb") as source:
            h.update(hashlib.sha256(source.read()).digest())
        return
    for folder, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in ("__pycache__", ".git"))
        for name in sorted(files):
            full = os.path.join(folder, name)
            h.update(os.path.relpath(full, path).encode())
            with open(full, "rb") as source:
                h.update(hashlib.sha256(source.read()).digest())


def user_paths(sys_path: tuple[str, ...]) -> tuple[str, ...]:
    """The entries of a caller's ``sys_path`` that hold the user's code, not installed
    packages: an image's containers import packages from the image alone."""
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    kept = []
    for entry in sys_path:
        real = os.path.realpath(entry)
        if os.path.basename(real) in ("site-packages", "dist-packages"):
            continue
        if any(real == p or real.startswith(p + os.sep) for p in prefixes):
            continue
        kept.append(entry)
    return tuple(kept)


@dataclass(frozen=True)
class Environment:
    """A built image, as a backend starts containers in it.

    Attributes:
        digest: the recipe's digest.
        python: the interpreter containers run.
        env: variables set in every container (``PATH``, ``VIRTUAL_ENV``, ``.env()``).
        workdir: the folder containers start in (None: the control plane's).
        sys_path: folders the image adds to the import path (``add_local_python_source``).
        accounts: the image's own /etc folder, whose account files (``passwd``, ``group``,
            ...) a jail of it uses (None: a jail's own; only a jailed build makes one).
    """

    digest: str
    python: str
    env: tuple[tuple[str, str], ...] = ()
    workdir: str | None = None
    sys_path: tuple[str, ...] = ()
    accounts: str | None = None


def dump_recipe(recipe: Recipe) -> bytes:
    """``recipe`` as a client sends it with a request (a sandbox's image)."""
    return pickle.dumps(recipe, protocol=pickle.HIGHEST_PROTOCOL)


def load_recipe(data: bytes) -> Recipe:
    """A recipe an authenticated client sent (as app definitions are: pickled).

    Raises:
        ValueError: ``data`` is not a recipe.
    """
    try:
        found = pickle.loads(data)
    except Exception as exc:
        raise ValueError(f"malformed image: {exc!r}") from None
    if not isinstance(found, Recipe):
        raise ValueError(f"malformed image: a {type(found).__name__}, not a recipe")
    return found
