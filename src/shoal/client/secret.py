"""``shoal.Secret``: environment variables for a function's containers, never the caller's.

Values given here (``from_dict``, ``from_dotenv``, ``from_local_environ``) are read
when the secret is created, in the caller's process (a container importing the app
reads no file or variable of the caller's); ``from_name`` refers to one a
server keeps (``shoal secret create NAME KEY=VALUE ...``), read where containers start.

Example::

    @app.function(secrets=[shoal.Secret.from_name("db"), shoal.Secret.from_dict({"MODE": "x"})])
    def f():
        return os.environ["DB_PASSWORD"]
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from shoal.context import is_local
from shoal.exception import InvalidError, NotFoundError
from shoal.spec.secrets import SecretSpec, check_values


class Secret:
    """A set of environment variables for containers (see the module docstring)."""

    def __init__(self, spec: SecretSpec) -> None:
        self.spec = spec

    @staticmethod
    def from_dict(env_dict: dict[str, str | None] | None = None, **_: object) -> Secret:
        """A secret of these variables (entries whose value is None are left out)."""
        values = {k: v for k, v in (env_dict or {}).items() if v is not None}
        return Secret(SecretSpec(values=check_values(values, "Secret.from_dict")))

    @staticmethod
    def from_local_environ(env_keys: Sequence[str], **_: object) -> Secret:
        """A secret of these variables' values in this process's environment.

        Raises:
            InvalidError: one of them is not set here.
        """
        if not is_local():  # a container re-imports the app: its variables are set already
            return Secret(SecretSpec())
        missing = [key for key in env_keys if key not in os.environ]
        if missing:
            raise InvalidError(f"Secret.from_local_environ: {missing} not set in this environment")
        values = {key: os.environ[key] for key in env_keys}
        return Secret(SecretSpec(values=check_values(values, "Secret.from_local_environ")))

    @staticmethod
    def from_dotenv(path: str | None = None, *, filename: str = ".env", **_: object) -> Secret:
        """A secret of the variables in a ``.env`` file: ``path`` (a file, or the folder
        holding ``filename``), by default the nearest one from the current folder up.

        Raises:
            NotFoundError: no such file.
        """
        if not is_local():  # the file is the caller's; the container has its variables
            return Secret(SecretSpec())
        found = _dotenv_file(path, filename)
        with open(found) as source:
            values = parse_dotenv(source.read())
        return Secret(SecretSpec(values=check_values(values, found)))

    @staticmethod
    def from_name(
        name: str, *, environment_name: str | None = None, required_keys: Sequence[str] = ()
    ) -> Secret:
        """The secret a server keeps under ``name``; its containers fail to start when
        it lacks one of ``required_keys``."""
        if not isinstance(name, str) or not name:
            raise InvalidError(f"Secret.from_name({name!r}): a name is required")
        return Secret(SecretSpec(name=name, required_keys=tuple(required_keys)))

    def __repr__(self) -> str:
        return f"<shoal.Secret {self.spec!r}>"


def _dotenv_file(path: str | None, filename: str) -> str:
    if path is not None:
        found = os.path.join(path, filename) if os.path.isdir(path) else path
        if not os.path.isfile(found):
            raise NotFoundError(f"Secret.from_dotenv: no file {found!r}")
        return found
    folder = os.getcwd()
    while True:
        candidate = os.path.join(folder, filename)
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(folder)
        if parent == folder:
            raise NotFoundError(f"Secret.from_dotenv: no {filename} here or in a parent folder")
        folder = parent


def parse_dotenv(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines (``export`` prefixes, quotes and ``#`` comments allowed).

    Example::

        >>> parse_dotenv('A=1\\nexport B="two words"  # note\\n# skipped')
        {'A': '1', 'B': 'two words'}
    """
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if value[:1] in ("'", '"') and value[0] in value[1:]:
            value = value[1 : value.index(value[0], 1)]
        else:
            value = value.split(" #", 1)[0].strip()
        values[key.strip()] = value
    return values
