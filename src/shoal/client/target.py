"""Where a client finds its server: a URL and the token it takes.

First match wins:

1. ``SHOAL_SERVER_URL`` and ``SHOAL_TOKEN``;
2. the profile in ``~/.shoal.toml`` (SHOAL_CONFIG) that ``shoal token set`` writes;
3. a ``shoal server`` running on this machine's home (SHOAL_HOME, ``~/.shoal``):
   its ``server.json`` names the address, its ``token`` file the token.

With none, an app runs on the embedded server of its own process
(:func:`embedded_target`): the one place ``client/`` starts the server's own code.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from shoal import exception, settings


@dataclass(frozen=True)
class Target:
    """Where a server listens and the token it takes."""

    url: str
    token: str
    #: Where the target came from, for error messages.
    source: str


def find_target() -> Target | None:
    """The server this process is told to use, or finds running here (see the module
    docstring); None when there is none."""
    url, token = settings.server_url(), settings.token()
    if url is not None:
        if token is None:
            raise exception.AuthError("SHOAL_SERVER_URL is set but SHOAL_TOKEN is not")
        return Target(url, token, "SHOAL_SERVER_URL")
    profile = read_profile()
    if profile is not None:
        return profile
    return local_server(settings.home())


def embedded_target() -> Target:
    """The embedded server of this process (started when first dialled): where an app
    runs, and named objects live, when :func:`find_target` finds no server."""
    embedded = _embedded()
    return Target(embedded.URL, embedded.TOKEN, "the embedded server in this process")


async def hold_embedded() -> Target:
    """Start the embedded server for an app that runs on it until :func:`release_embedded`."""
    await _embedded().hold()
    return embedded_target()


async def release_embedded() -> None:
    """An app that ran on the embedded server ended (the last one stops it)."""
    await _embedded().release()


async def ensure_embedded() -> None:
    """Start the embedded server unless it runs already (a connection is dialling it)."""
    await _embedded().ensure()


def _embedded() -> ModuleType:
    """:mod:`shoal.server.embedded`: the one place ``client/`` starts the server's own code
    (the embedded default runs it in this process)."""
    from shoal.server import embedded

    return embedded


def read_profile() -> Target | None:
    path = settings.config_file()
    try:
        with open(path, "rb") as source:
            config = tomllib.load(source)
    except FileNotFoundError:
        return None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise exception.InvalidError(f"{path}: {exc}") from None
    name = str(config.get("active", "default"))
    profile = config.get(name)
    if not isinstance(profile, dict) or "url" not in profile or "token" not in profile:
        return None
    return Target(str(profile["url"]), str(profile["token"]), f"profile {name!r} in {path}")


def write_profile(url: str, token: str, name: str = "default") -> str:
    """Store ``url`` and ``token`` as profile ``name`` (the active one); return the file."""
    path = settings.config_file()
    profiles: dict[str, Any] = {}
    try:
        with open(path, "rb") as source:
            profiles = tomllib.load(source)
    except FileNotFoundError:
        pass
    profiles[name] = {"url": url, "token": token}
    profiles["active"] = name
    lines = [f"active = {json.dumps(name)}", ""]
    for key, value in profiles.items():
        if isinstance(value, dict):
            lines += [f"[{key}]"] + [f"{k} = {json.dumps(str(v))}" for k, v in value.items()]
            lines.append("")
    settings.write_private(path, "\n".join(lines))
    return path


def local_server(home: str) -> Target | None:
    """The server running on ``home``, if its process is alive."""
    try:
        with open(os.path.join(home, "server.json")) as source:
            info = json.load(source)
        with open(os.path.join(home, "token")) as source:
            token = source.read().strip()
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Target(str(info["url"]), token, f"the server running on {home}")
