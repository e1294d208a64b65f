"""The local backend's images: one virtual environment per recipe, built with uv, cached.

An image (:class:`~shoal.spec.image.Recipe`) is built into
``SHOAL_IMAGE_CACHE/<digest>/`` (``<digest>-jailed/`` where its commands run in a jail:
:mod:`shoal.backends.image_jail`, whose ``fs/`` is the file tree they write): ``venv/``
(the interpreter, the image's packages
and the container runtime's own: ``cloudpickle``, ``msgpack``, ``rich`` at the
versions this process runs, with Shoal's package linked in) and ``root/`` (the
image's files; containers start there and import from there, as Modal's ``/root``).
A ``ready`` file, written last, marks a finished build, so a later run with the
same steps starts at once; a lock file lets one process build while others wait.

Every line a step prints goes to ``log`` as it comes (``[image 1a2b3c4d] ...``).
A failing step raises :class:`~shoal.exception.ImageBuildError` ending with its
output, and leaves no ``ready`` file: the next run builds again.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import glob
import importlib.metadata
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from collections.abc import Callable, Sequence
from typing import Any, Final

from shoal import settings
from shoal.backends import image_jail, isolation
from shoal.exception import ImageBuildError
from shoal.spec.image import Environment, Recipe, Step

#: Packages the container runtime imports, installed in every image at this process's versions
#: (with those of the features its functions use: ``shoal.spec.image.FEATURE_PACKAGES``).
RUNTIME_PACKAGES: Final = ("cloudpickle", "msgpack", "rich")
#: Output lines a failed step's error repeats.
_TAIL_LINES: Final = 30
#: Shoal's own package folder, linked into every image.
_SHOAL_PACKAGE: Final = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: What a jailed build command's environment adds (caches go to its /tmp, not the image).
_JAILED_ENV: Final = {"PYTHONUNBUFFERED": "1", "HOME": "/root", "XDG_CACHE_HOME": "/tmp/.cache"}
#: Oldest interpreter the container runtime supports.
_MIN_PYTHON: Final = (3, 11)


def uv_binary() -> str:
    """The uv executable installed with Shoal.

    Raises:
        ImageBuildError: uv is missing.
    """
    try:
        from uv import find_uv_bin
    except ImportError:
        found = shutil.which("uv")
        if found is None:
            raise ImageBuildError("images need uv: pip install uv") from None
        return found
    return str(find_uv_bin())


def find_python(version: str | None) -> str:
    """The interpreter an image of ``python_version=version`` runs.

    Raises:
        ImageBuildError: no such version on this machine (the message lists those there).
    """
    if version is None:
        return sys.executable
    if not re.fullmatch(r"3\.\d+(\.\d+)?", version):
        raise ImageBuildError(f"python_version={version!r}: expected a version like '3.12'")
    series = ".".join(version.split(".")[:2])
    if tuple(int(p) for p in series.split(".")) < _MIN_PYTHON:
        raise ImageBuildError(f"python_version={version!r}: Shoal's containers need 3.11 or newer")
    for candidate in _candidates(series):
        found = _version_of(candidate) or ""
        if found == version or (version == series and found.startswith(series + ".")):
            return candidate
    there = ", ".join(_available()) or "none"
    raise ImageBuildError(
        f"python_version={version!r} is not installed on this machine (available: {there}); "
        f"install python{series} or pick one of those"
    )


def _candidates(series: str) -> list[str]:
    """Interpreters that may be Python ``series``: this one, the versions pyenv installed
    (the interpreters themselves, not pyenv's shims, which refuse a version that is not
    selected), then ``python3.X`` on PATH, shims left out."""
    found = []
    if f"{sys.version_info.major}.{sys.version_info.minor}" == series:
        found.append(sys.executable)
    found += sorted(
        glob.glob(os.path.join(_pyenv_root(), "versions", f"{series}*", "bin", "python3"))
    )
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        path = os.path.join(folder, f"python{series}")
        if (
            folder
            and os.path.basename(folder.rstrip(os.sep)) != "shims"
            and os.access(path, os.X_OK)
        ):
            found.append(path)
    return list(dict.fromkeys(found))


def _pyenv_root() -> str:
    """Where pyenv keeps its interpreters (``PYENV_ROOT``, by default ``~/.pyenv``)."""
    return os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")


def _available() -> list[str]:
    """The Python series (3.11 and newer) that some interpreter here runs, for messages."""
    series = set()
    for minor in range(_MIN_PYTHON[1], _MIN_PYTHON[1] + 20):
        for candidate in _candidates(f"3.{minor}"):
            if _version_of(candidate) is not None:
                series.add(f"3.{minor}")
                break
    return sorted(series, key=lambda s: int(s.split(".")[1]))


@functools.cache
def _version_of(python: str) -> str | None:
    """The full version ``python`` runs (``3.12.1``), or None when it does not run."""
    try:
        out = subprocess.run(
            [python, "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    version = out.stdout.strip()
    return version if out.returncode == 0 and re.fullmatch(r"\d+\.\d+\.\d+\S*", version) else None


class ImageBuilder:
    """Builds recipes into environments under ``cache`` (see the module docstring)."""

    def __init__(self, cache: str, jailed: bool = False) -> None:
        self._cache = cache
        #: Whether build commands run in a jail (:mod:`shoal.backends.image_jail`); such
        #: an image is built apart from the same recipe's unjailed one.
        self.jailed = jailed

    async def build(self, recipe: Recipe, log: Callable[[str], None]) -> Environment:
        """The environment of ``recipe``, built now unless a finished build is cached;
        each line the build prints goes to ``log``.

        Raises:
            ImageBuildError: a step failed, or the interpreter is missing.
        """
        digest = recipe.digest()
        folder = os.path.join(self._cache, digest + ("-jailed" if self.jailed else ""))
        os.makedirs(self._cache, exist_ok=True)
        lock = await asyncio.to_thread(_lock, folder + ".lock")
        try:
            saved = _finished(folder)
            if saved is None:
                await _Build(recipe, folder, log, self.jailed).run()
                saved = _finished(folder)
                assert saved is not None
        finally:
            os.close(lock)
        return Environment(
            digest=digest,
            python=saved["python"],
            env=tuple((k, v) for k, v in saved["env"].items()),
            workdir=saved["workdir"],
            sys_path=(saved["root"],),
            accounts=saved.get("accounts"),
        )


def _finished(folder: str) -> dict[str, Any] | None:
    """What a finished build of ``folder`` saved, or None when it is not finished."""
    if not os.path.exists(os.path.join(folder, "ready")):
        return None
    with open(os.path.join(folder, "environment.json")) as source:
        saved: dict[str, Any] = json.load(source)
    return saved


def _lock(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


class _Build:
    """One build of one recipe into ``folder``."""

    def __init__(
        self, recipe: Recipe, folder: str, log: Callable[[str], None], jailed: bool = False
    ) -> None:
        self.recipe = recipe
        self.jailed = jailed
        self.folder = folder
        self.venv = os.path.join(folder, "venv")
        self.python = os.path.join(self.venv, "bin", "python")
        self.root = os.path.join(folder, "root")
        #: The file tree of a jailed build (its jails' ``/``; see image_jail).
        self.fs = os.path.join(folder, "fs")
        self.env: dict[str, str] = {}
        self.workdir = self.root
        self._identity = recipe.identity()
        self._prefix = f"[image {os.path.basename(folder)[:8]}] "  # the folder is the digest
        self._log = log

    async def run(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)  # a build that died half way
        os.makedirs(self.root)
        if self.jailed:
            image_jail.prepare(self.fs)
        base = find_python(self.recipe.python_version)
        self._log(f"{self._prefix}building: python {self.recipe.python_version or 'default'}")
        uv = uv_binary()
        await self._run([uv, "venv", "--quiet", "--python", base, self.venv], "create venv")
        wanted = (*RUNTIME_PACKAGES, *self.recipe.runtime_packages())
        runtime = [f"{name}=={importlib.metadata.version(name)}" for name in wanted]
        await self._pip(runtime, "install the container runtime")
        self._link_runtime()
        for step in self.recipe.steps:
            await self._step(step)
        self._finish()
        self._log(f"{self._prefix}built")

    def _link_runtime(self) -> None:
        """Link Shoal's package into the venv and put the image's root on its path."""
        site = self._site_packages()
        os.symlink(_SHOAL_PACKAGE, os.path.join(site, "shoal"))
        with open(os.path.join(site, "_shoal_image_root.pth"), "w") as pth:
            pth.write(self.root + "\n")

    def _finish(self) -> None:
        """Save what containers need, then mark the build finished (``ready`` last)."""
        saved = {
            "python": self.python,
            "env": self._container_env(),
            "workdir": self.workdir,
            "root": self.root,
            "accounts": os.path.join(self.fs, "etc") if self.jailed else None,
        }
        with open(os.path.join(self.folder, "environment.json"), "w") as out:
            json.dump(saved, out)
        with open(os.path.join(self.folder, "ready"), "w") as out:
            out.write("ok\n")

    def _site_packages(self) -> str:
        lib = os.path.join(self.venv, "lib")
        for name in os.listdir(lib):
            if name.startswith("python"):
                return os.path.join(lib, name, "site-packages")
        raise ImageBuildError(f"no site-packages under {lib}")

    def _container_env(self) -> dict[str, str]:
        path = os.path.join(self.venv, "bin") + os.pathsep + os.environ.get("PATH", "")
        return {
            "PATH": path,
            "VIRTUAL_ENV": self.venv,
            "SHOAL_IMAGE_ID": self._identity,
            **self.env,
        }

    async def _step(self, step: Step) -> None:
        args = list(step.args)
        if step.kind == "pip":
            await self._pip(args, f"pip install {' '.join(args)}")
        elif step.kind == "requirements":
            await self._pip(["-r", args[0], *args[1:]], f"pip install -r {args[0]}")
        elif step.kind == "pyproject":
            wanted = _pyproject_requirements(args[0], args[1:])
            if wanted:
                await self._pip(wanted, f"install the dependencies of {args[0]}")
        elif step.kind == "apt":
            await self._apt(args)
        elif step.kind == "run":
            for command in args:
                await self._run(["sh", "-c", command], f"run {command!r}", jailed=self.jailed)
        elif step.kind == "function":
            await self._function(step)
        elif step.kind == "env":
            self.env.update(pair.split("=", 1) for pair in args)  # type: ignore[misc]
        elif step.kind == "workdir":
            self.workdir = args[0] if os.path.isabs(args[0]) else os.path.join(self.root, args[0])
            os.makedirs(self.workdir, exist_ok=True)
        elif step.kind == "archive":
            count = await asyncio.to_thread(unpack, step.data, self.root)
            self._log(f"{self._prefix}unpacked a snapshot of {count} files")
        else:
            self._copy(step.kind, args)

    def _copy(self, kind: str, args: list[str]) -> None:
        """Copy local files into the image's root (``file``, ``dir``, ``python`` steps)."""
        source, where = args
        if kind == "python":  # a module or package, importable by its dotted name
            where = where.replace(".", os.sep) + ("" if os.path.isdir(source) else ".py")
        target = os.path.join(self.root, where)
        os.makedirs(os.path.dirname(target) or self.root, exist_ok=True)
        if os.path.isdir(source):
            ignore = shutil.ignore_patterns("__pycache__", ".git", "*.pyc")
            shutil.copytree(source, target, dirs_exist_ok=True, ignore=ignore)
        else:
            shutil.copy2(source, target)
        self._log(f"{self._prefix}added {source} at {target}")

    async def _pip(self, args: list[str], what: str) -> None:
        command = [uv_binary(), "pip", "install", "--python", self.python, *args]
        await self._run(command, what)

    async def _apt(self, packages: list[str]) -> None:
        missing = [name for name in packages if not _dpkg_installed(name)]
        if not missing:
            self._log(f"{self._prefix}apt packages present on the host: {' '.join(packages)}")
            return
        if not settings.allow_apt():
            raise ImageBuildError(
                f"apt_install: {' '.join(missing)} not installed on this machine. The local "
                f"backend shares the host's system packages: install them "
                f"(apt-get install {' '.join(missing)}) or set SHOAL_ALLOW_APT=1 to let "
                "image builds install them"
            )
        command = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
        await self._run(command, f"apt-get install {' '.join(missing)}")

    async def _function(self, step: Step) -> None:
        script = (
            "import sys, cloudpickle\n"
            f"sys.path[:0] = [{step.args[0]!r}]\n"
            "fn, args, kwargs = cloudpickle.loads(sys.stdin.buffer.read())\n"
            "fn(*args, **kwargs)\n"
        )
        await self._run(
            [self.python, "-c", script],
            "run_function",
            stdin=step.data,
            jailed=self.jailed,
            read_only=[step.args[0], _SHOAL_PACKAGE],
        )

    async def _run(
        self,
        command: list[str],
        what: str,
        stdin: bytes | None = None,
        jailed: bool = False,
        read_only: Sequence[str] = (),
    ) -> None:
        """Run one build command in the image's environment (``jailed``: in a build jail,
        with ``read_only`` host folders bound), streaming its output.

        Raises:
            ImageBuildError: it exited non-zero (the message ends with its output).
        """
        env = {**os.environ, **self._container_env(), "PYTHONUNBUFFERED": "1"}
        env.pop("PYTHONPATH", None)
        tail: list[str] = []

        def heard(raw: bytes) -> None:
            nonlocal tail
            line = raw.decode(errors="replace").rstrip()
            self._log(self._prefix + line)
            tail = [*tail[-_TAIL_LINES + 1 :], line]

        try:
            if jailed:
                code = await image_jail.run(
                    command,
                    folder=self.folder,
                    fs=self.fs,
                    workdir=self.workdir,
                    env={**self._container_env(), **_JAILED_ENV},
                    read_only=[self._base_prefix(), *read_only],
                    writable=[(self.root, "/root")],
                    stdin=stdin,
                    on_line=heard,
                )
            else:
                code = await self._run_here(command, env, stdin, heard)
        except OSError as exc:
            raise ImageBuildError(f"image step {what}: {exc}") from None
        if code != 0:
            output = "\n".join(tail)
            output += _jailed_hint(command) if jailed else ""
            raise ImageBuildError(f"image step {what} failed (exit {code}):\n{output}")

    def _base_prefix(self) -> str:
        """The installation the image's interpreter links to (outside the image)."""
        return os.path.dirname(os.path.dirname(os.path.realpath(self.python)))

    async def _run_here(
        self,
        command: list[str],
        env: dict[str, str],
        stdin: bytes | None,
        heard: Callable[[bytes], None],
    ) -> int:
        """Run ``command`` as a process of this host; each line goes to ``heard``."""
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=env,
        )
        return await image_jail.talk(proc, stdin, heard)


def _jailed_hint(command: list[str]) -> str:
    """Why a jailed build command that failed may have failed, when its words say."""
    said = " ".join(command)
    if re.search(r"\b(apt|apt-get|dpkg)\b", said):
        return (
            "\n(build commands run in a jail, where the host's /usr is read-only: install "
            "Debian packages with Image.apt_install, which SHOAL_ALLOW_APT=1 lets a build run "
            "on the host)"
        )
    why = isolation.users_problem()
    if why and re.search(r"\b(useradd|adduser|groupadd|chown|su|runuser)\b", said):
        return f"\n(a jail here has no users but root: {why})"
    return ""


def _dpkg_installed(name: str) -> bool:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True, check=False
        )
    except OSError:  # not a Debian system: nothing can be checked
        return shutil.which(name) is not None
    return out.returncode == 0 and out.stdout.strip().endswith("installed")


def _pyproject_requirements(path: str, groups: list[str]) -> list[str]:
    try:
        with open(path, "rb") as source:
            project = tomllib.load(source).get("project", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ImageBuildError(f"{path}: {exc}") from None
    wanted = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for group in groups:
        if group not in optional:
            raise ImageBuildError(f"{path} has no optional dependency group {group!r}")
        wanted += optional[group]
    return wanted


def unpack(data: bytes, folder: str) -> int:
    """Unpack the tar ``data`` (a sandbox's snapshot: what code in it wrote, so trusted for
    nothing) into ``folder``; the number of members. Nothing is written outside ``folder``
    (tarfile's ``tar`` filter: no member path, and no path through a link, that leaves it;
    no set-id bits); links may point anywhere, as in the sandbox.

    Raises:
        ImageBuildError: not a tar, or a member that would leave ``folder``.
    """
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            members = archive.getmembers()
            archive.extractall(folder, filter="tar")
    except (tarfile.TarError, OSError) as exc:
        raise ImageBuildError(f"a snapshot could not be unpacked: {exc}") from None
    return len(members)
