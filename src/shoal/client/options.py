"""Options of a function or class that name caller-side objects (secrets, volumes) or
mean nothing on Shoal's backends (placement), turned into what a spec holds.

Shared by ``@app.function``/``@app.cls`` and ``with_options``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from shoal.client.secret import Secret
from shoal.client.volume import Volume
from shoal.client.volume import mounts as volume_mounts
from shoal.exception import InvalidError
from shoal.spec.secrets import SecretSpec, check_values

#: Placement options already warned about in this process.
_warned: set[str] = set()


def ignored_placement(**given: object) -> None:
    """Warn once per option that ``region=``/``cloud=`` mean nothing to a local backend."""
    for option, value in given.items():
        if value is not None and option not in _warned:
            _warned.add(option)
            warnings.warn(
                f"{option}={value!r} is accepted for Modal compatibility and ignored: "
                "Shoal runs containers on its own machines",
                stacklevel=4,
            )


def secret_specs(secrets: Sequence[Secret]) -> tuple[SecretSpec, ...]:
    """``secrets=[...]`` as a spec holds them.

    Raises:
        InvalidError: not a list of ``shoal.Secret``.
    """
    if isinstance(secrets, Secret) or not all(isinstance(s, Secret) for s in secrets):
        raise InvalidError(f"secrets={secrets!r}: must be a list of shoal.Secret")
    return tuple(secret.spec for secret in secrets)


def variant_options(current: tuple[SecretSpec, ...], **options: Any) -> dict[str, Any]:
    """``with_options`` arguments as ``control.spec.with_options`` takes them: ``secrets``
    and ``volumes`` replace the function's (Modal's rule), ``env`` adds variables on top
    of its secrets, and placement is warned about and dropped.

    Raises:
        InvalidError: a malformed secret, volume or variable.
    """
    ignored_placement(**{k: options.pop(k, None) for k in ("region", "cloud", "routing_region")})
    secrets: tuple[SecretSpec, ...] | None = None
    if "secrets" in options:
        secrets = secret_specs(options.pop("secrets") or ())
    env = options.pop("env", None)
    if env:
        if not isinstance(env, Mapping):
            raise InvalidError(f"env={env!r}: must be a dict of variables")
        given = {k: v for k, v in env.items() if v is not None}
        extra = SecretSpec(values=check_values(given, "with_options(env=...)"))
        secrets = (*(current if secrets is None else secrets), extra)
    if secrets is not None:
        options["secrets"] = secrets
    if "volumes" in options:
        volumes: Mapping[str, Volume] | None = options.pop("volumes")
        options["volumes"] = volume_mounts(volumes, "with_options")
    return options
