"""What a function's ``secrets=[...]`` are to the control plane, and how they become env.

A :class:`SecretSpec` holds either the values themselves (``Secret.from_dict``,
``from_dotenv``, ``from_local_environ``: read where the app is defined) or the
name of a secret a server keeps (``Secret.from_name``), resolved where the
containers start, so a named secret's values never pass through the caller.
The variables go into the containers' environment only, never the caller's.

Example::

    >>> merged([SecretSpec(values=(("A", "1"),)), SecretSpec(values=(("A", "2"),))], None)
    {'A': '2'}
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shoal.exception import InvalidError, NotFoundError

#: What an environment variable's name may be.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: Looks up a named secret's values (raises NotFoundError when there is none).
Lookup = Callable[[str], dict[str, str]]


@dataclass(frozen=True)
class SecretSpec:
    """A secret: its values, or the name a server keeps it under, and keys it must have."""

    values: tuple[tuple[str, str], ...] = ()
    name: str | None = None
    required_keys: tuple[str, ...] = ()

    def __repr__(self) -> str:  # never the values
        what = f"name={self.name!r}" if self.name else f"keys={[k for k, _ in self.values]}"
        return f"SecretSpec({what})"


def check_values(values: dict[str, str], where: str) -> tuple[tuple[str, str], ...]:
    """``values`` as a spec holds them.

    Raises:
        InvalidError: a name that is not an environment variable's, or a non-string value.
    """
    for key, value in values.items():
        if not isinstance(key, str) or not _NAME.fullmatch(key):
            raise InvalidError(f"{where}: {key!r} is not an environment variable name")
        if not isinstance(value, str):
            raise InvalidError(f"{where}: the value of {key} must be a string")
    return tuple(values.items())


def merged(secrets: Sequence[SecretSpec], lookup: Lookup | None) -> dict[str, str]:
    """The variables ``secrets`` set, later ones winning.

    Raises:
        NotFoundError: a named secret does not exist, or no server keeps names here.
        InvalidError: a secret lacks one of its ``required_keys``.
    """
    env: dict[str, str] = {}
    for secret in secrets:
        if secret.name is None:
            values = dict(secret.values)
        elif lookup is None:
            raise NotFoundError(
                f"Secret.from_name({secret.name!r}) needs a shoal server, which keeps named "
                "secrets: start one with `shoal server` and create it with "
                f"`shoal secret create {secret.name} KEY=VALUE`"
            )
        else:
            values = lookup(secret.name)
        missing = [key for key in secret.required_keys if key not in values]
        if missing:
            raise InvalidError(f"secret {secret.name or '(from values)'} lacks keys {missing}")
        env.update(values)
    return env
