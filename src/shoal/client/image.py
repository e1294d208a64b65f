"""``shoal.Image``: the environment a function's containers run in, built step by step.

Each method returns a new image with one more build step (images are immutable
and may be shared between functions). On the local backend an image becomes a
virtual environment of its own, built with ``uv`` and cached by the digest of
its steps (:mod:`shoal.backends.image_build`); it holds exactly the image's
packages and what the container runtime needs. Paths inside a container follow
Modal's: the container starts in ``/root``, which is also on the import path.
On the local backend that is the image's own folder, so ``remote_path="/root/x"``
and ``remote_path="x"`` mean the same place, and other absolute paths are
refused (they would be written on the host).

Example::

    image = (
        shoal.Image.debian_slim(python_version="3.11")
        .pip_install("six==1.16.0")
        .env({"MODE": "prod"})
        .add_local_python_source("helpers")
    )

    @app.function(image=image)
    def f(): ...
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shlex
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import cloudpickle

from shoal import settings
from shoal.context import is_local
from shoal.exception import InvalidError
from shoal.spec.image import Recipe, Step

#: Where a container starts and imports from, in Modal's images.
MODAL_ROOT = "/root"


def _flat(packages: Sequence[str | list[str]]) -> list[str]:
    out: list[str] = []
    for item in packages:
        out.extend([item] if isinstance(item, str) else list(item))
    for name in out:
        if not isinstance(name, str) or not name.strip():
            raise InvalidError(f"package {name!r}: must be a non-empty string")
    return out


def _options(
    find_links: str | None,
    index_url: str | None,
    extra_index_url: str | None,
    pre: bool,
    extra_options: str,
) -> list[str]:
    """pip's options, in the form the builder passes on to ``uv pip install``."""
    out = []
    if find_links:
        out.append(f"--find-links={find_links}")
    if index_url:
        out.append(f"--index-url={index_url}")
    if extra_index_url:
        out.append(f"--extra-index-url={extra_index_url}")
    if pre:
        out.append("--prerelease=allow")
    out += shlex.split(extra_options)
    return out


def in_image_root(remote_path: str) -> str:
    """``remote_path`` relative to the image's root (Modal's ``/root``).

    Raises:
        InvalidError: an absolute path elsewhere than under ``/root``.
    """
    path = os.path.normpath(remote_path)
    if os.path.isabs(path):
        if path != MODAL_ROOT and not path.startswith(MODAL_ROOT + "/"):
            raise InvalidError(
                f"remote path {remote_path!r}: on the local backend a container sees the "
                f"image's files under its working directory ({MODAL_ROOT}, the image's own "
                f"folder); use a path under {MODAL_ROOT}/ or a relative one"
            )
        path = os.path.relpath(path, MODAL_ROOT)
    if path == ".." or path.startswith("../"):
        raise InvalidError(f"remote path {remote_path!r} leaves the image's folder")
    return path


class Image:
    """An immutable recipe for a container environment (see the module docstring)."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self._identity_cache: str | None = None

    def _with(self, kind: str, args: Sequence[str] = (), data: bytes = b"") -> Image:
        step = Step(kind, tuple(args), data)
        return Image(Recipe(self.recipe.python_version, (*self.recipe.steps, step)))

    # -- bases ----------------------------------------------------------------

    @staticmethod
    def debian_slim(python_version: str | None = None, force_build: bool = False) -> Image:
        """A fresh environment with only the container runtime in it. ``python_version``
        ("3.12") picks an interpreter installed on the machine (None: the caller's)."""
        if python_version is not None and not isinstance(python_version, str):
            raise InvalidError(f"python_version={python_version!r}: must be a string like '3.12'")
        return Image(Recipe(python_version=python_version))

    @staticmethod
    def from_registry(tag: str, *args: Any, **kwargs: Any) -> Image:
        """Not available on the local backend (it runs no container engine).

        Raises:
            InvalidError: always, saying what would run it.
        """
        raise InvalidError(
            f"Image.from_registry({tag!r}) needs a container engine to pull and run OCI "
            "images; Shoal's local backend runs containers as processes in virtual "
            "environments. Use Image.debian_slim().pip_install(...) / .apt_install(...) "
            "for the packages the image provides"
        )

    @staticmethod
    def from_dockerfile(path: str, *args: Any, **kwargs: Any) -> Image:
        """Not available on the local backend (see :meth:`from_registry`).

        Raises:
            InvalidError: always.
        """
        raise InvalidError(
            f"Image.from_dockerfile({path!r}) needs a container engine to build it; Shoal's "
            "local backend builds images as virtual environments: translate its RUN pip "
            "install / apt-get lines to .pip_install(...) / .apt_install(...)"
        )

    # -- packages -------------------------------------------------------------

    def pip_install(
        self,
        *packages: str | list[str],
        find_links: str | None = None,
        index_url: str | None = None,
        extra_index_url: str | None = None,
        pre: bool = False,
        extra_options: str = "",
        force_build: bool = False,
        **_: Any,
    ) -> Image:
        """Install Python packages (pip's requirement syntax) into the image."""
        names = _flat(packages)
        if not names:
            return self
        opts = _options(find_links, index_url, extra_index_url, pre, extra_options)
        return self._with("pip", [*names, *opts])

    def uv_pip_install(
        self,
        *packages: str | list[str],
        requirements: list[str] | None = None,
        find_links: str | None = None,
        index_url: str | None = None,
        extra_index_url: str | None = None,
        pre: bool = False,
        extra_options: str = "",
        force_build: bool = False,
        **_: Any,
    ) -> Image:
        """Install Python packages with uv (what every install here uses)."""
        image = self.pip_install(
            *packages,
            find_links=find_links,
            index_url=index_url,
            extra_index_url=extra_index_url,
            pre=pre,
            extra_options=extra_options,
        )
        for path in requirements or []:  # with the same index options as the packages
            image = image.pip_install_from_requirements(
                path,
                find_links,
                index_url=index_url,
                extra_index_url=extra_index_url,
                pre=pre,
                extra_options=extra_options,
            )
        return image

    def pip_install_from_requirements(
        self, requirements_txt: str, find_links: str | None = None, **options: Any
    ) -> Image:
        """Install what a requirements file lists (its contents are part of the digest)."""
        path = os.path.abspath(requirements_txt)
        if is_local() and not os.path.isfile(path):
            raise InvalidError(f"requirements file {requirements_txt!r} does not exist")
        opts = _options(
            find_links,
            options.get("index_url"),
            options.get("extra_index_url"),
            bool(options.get("pre")),
            options.get("extra_options", ""),
        )
        return self._with("requirements", [path, *opts])

    def pip_install_from_pyproject(
        self, pyproject_toml: str, optional_dependencies: list[str] | None = None, **_: Any
    ) -> Image:
        """Install a pyproject.toml's dependencies (and the named optional groups), not
        the project itself."""
        path = os.path.abspath(pyproject_toml)
        if is_local() and not os.path.isfile(path):
            raise InvalidError(f"pyproject file {pyproject_toml!r} does not exist")
        return self._with("pyproject", [path, *(optional_dependencies or [])])

    def apt_install(self, *packages: str | list[str], force_build: bool = False, **_: Any) -> Image:
        """Debian packages the image needs. On the local backend the build checks they
        are installed on the host, and installs them only when ``SHOAL_ALLOW_APT=1``."""
        names = _flat(packages)
        return self._with("apt", names) if names else self

    # -- commands and code ----------------------------------------------------

    def run_commands(
        self, *commands: str | list[str], force_build: bool = False, **_: Any
    ) -> Image:
        """Run shell commands at build time, in the image's folder, with its environment
        active (``pip``/``python`` are the image's)."""
        lines = _flat(commands)
        return self._with("run", lines) if lines else self

    def run_function(
        self,
        raw_f: Callable[..., Any],
        *,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        **_: Any,
    ) -> Image:
        """Call ``raw_f(*args, **kwargs)`` once at build time, in the image's environment
        (to download weights, warm a cache). Its source is part of the digest."""
        if not callable(raw_f):
            raise InvalidError(f"run_function needs a function, got {raw_f!r}")
        data = cloudpickle.dumps((raw_f, tuple(args), dict(kwargs or {})))
        code = getattr(raw_f, "__code__", None)
        folder = os.path.dirname(os.path.abspath(code.co_filename)) if code else os.getcwd()
        return self._with("function", [folder, getattr(raw_f, "__qualname__", "")], data)

    def env(self, vars: dict[str, str]) -> Image:
        """Set environment variables for later build steps and every container."""
        for key, value in vars.items():
            if not isinstance(key, str) or not key or "=" in key or not isinstance(value, str):
                raise InvalidError(f"env {{{key!r}: {value!r}}}: names and values are strings")
        return self._with("env", [f"{k}={v}" for k, v in vars.items()]) if vars else self

    def workdir(self, path: str) -> Image:
        """Where containers start and later build steps run (see the module docstring)."""
        normal = os.path.normpath(str(path))
        if os.path.isabs(normal) and not (normal == MODAL_ROOT or normal.startswith("/root/")):
            if is_local() and not os.path.isdir(normal):
                raise InvalidError(
                    f"workdir {path!r} does not exist on this machine; the local backend "
                    f"does not create folders outside the image's own ({MODAL_ROOT})"
                )
            return self._with("workdir", [normal])
        return self._with("workdir", [in_image_root(normal)])

    # -- local files ------------------------------------------------------------

    def add_local_file(self, local_path: str, remote_path: str, *, copy: bool = False) -> Image:
        """Put a local file at ``remote_path`` in every container."""
        path = os.path.abspath(local_path)
        if is_local() and not os.path.isfile(path):
            raise InvalidError(f"add_local_file: {local_path!r} is not a file")
        target = in_image_root(remote_path)
        if remote_path.endswith("/"):
            target = os.path.join(target, os.path.basename(path))
        return self._with("file", [path, target])

    def add_local_dir(
        self, local_path: str, remote_path: str, *, copy: bool = False, ignore: Any = ()
    ) -> Image:
        """Put a local folder's files under ``remote_path`` in every container."""
        path = os.path.abspath(local_path)
        if is_local() and not os.path.isdir(path):
            raise InvalidError(f"add_local_dir: {local_path!r} is not a folder")
        return self._with("dir", [path, in_image_root(remote_path)])

    def add_local_python_source(self, *modules: str, copy: bool = False, ignore: Any = ()) -> Image:
        """Make local modules or packages importable in containers by the same names."""
        image = self
        for name in modules:
            if not is_local():  # a container importing the app: the image has it already
                image = image._with("python", [name, name])
                continue
            spec = importlib.util.find_spec(name)
            if spec is None or spec.origin is None:
                raise InvalidError(f"add_local_python_source: no module named {name!r} here")
            source = spec.origin
            if spec.submodule_search_locations:  # a package: its folder
                source = os.path.dirname(source)
            image = image._with("python", [os.path.abspath(source), name])
        return image

    # -- in the caller --------------------------------------------------------

    @contextlib.contextmanager
    def imports(self) -> Iterator[None]:
        """Import packages only the image has: an ImportError in the block is raised in a
        container of this image, and skipped anywhere else (the caller's process, a
        function of another image), where the names stay undefined."""
        try:
            yield
        except ImportError:
            if not is_local() and settings.image_id() == self._identity():
                raise

    def _identity(self) -> str:
        if self._identity_cache is None:
            self._identity_cache = self.recipe.identity()
        return self._identity_cache

    def __repr__(self) -> str:
        kinds = [step.kind for step in self.recipe.steps]
        return f"<shoal.Image python={self.recipe.python_version or 'default'} steps={kinds}>"
