"""Every ``SHOAL_*`` environment variable, its default, and its meaning, in one table.

Nothing else in Shoal reads ``os.environ`` for configuration; code asks
:func:`get` here. Values are parsed on each call so tests may set a variable
in a child process's environment.

| variable | default | meaning |
|---|---|---|
| SHOAL_MAX_PAYLOAD_BYTES | 67108864 | largest pickled arguments or result (bytes) |
| SHOAL_SHUTDOWN_GRACE | 5.0 | seconds a stopping container may take before it is killed |
| SHOAL_FORK_SERVER | 1 | local containers fork from a process that has imported the |
|                   |   | user's module (Linux; 0 starts each as a fresh interpreter) |
| SHOAL_MAX_REQUEST_BYTES | 16777216 | largest HTTP request body the gateway takes (413 beyond) |
| SHOAL_GATEWAY_TIMEOUT | 150 | seconds a request may wait for its response to start (504) |
| SHOAL_GATEWAY_TOKEN | (random) | the token web endpoints with requires_auth ask for |
| SHOAL_GATEWAY_MAX_CONNECTIONS | 1000 | open HTTP connections at once (also kept under half |
|                               |      | the file limit); idle ones are evicted, then 503 |
| SHOAL_GATEWAY_HEADER_TIMEOUT | 10 | seconds a client has to send a request's headers |
| SHOAL_GATEWAY_BODY_TIMEOUT | 30 | seconds a request body may stall between chunks |
| SHOAL_MAX_CONTAINERS | 8 per CPU, >= 16 | containers one control plane keeps at |
|                      |                  | once, over all functions (excess inputs wait) |
| SHOAL_CONTAINER_TRANSPORT | unix | how containers reach their control plane: unix (a |
|                           |      | socket in a private directory) or tcp (127.0.0.1) |
| SHOAL_HANDSHAKE_TIMEOUT | 10 | seconds a new connection to the control plane has to |
|                         |    | authenticate before it is closed |
| SHOAL_CONTAINER_TOKEN | (none) | set by the control plane for a container it starts; the |
|                       |        | secret the container presents when it connects back |
| SHOAL_HOME | ~/.shoal | a server's state (SQLite store, bundles, token) |
| SHOAL_SERVER_URL | (none) | the server clients use, e.g. tcp://127.0.0.1:7420 |
| SHOAL_TOKEN | (none) | the access token clients present; for `shoal server`, the |
|             |        | token it accepts (instead of creating one) |
| SHOAL_RESULT_TTL | 86400 | seconds a server keeps the outcome of a durable spawn |
| SHOAL_CONFIG | ~/.shoal.toml | the client's profile file (`shoal token set`) |
| SHOAL_LOG_LINES | 5000 | lines of container output a server keeps per app |
| SHOAL_IMAGE_CACHE | ~/.cache/shoal/images | where the local backend keeps built images |
| SHOAL_BUNDLE_CACHE | ~/.cache/shoal/bundles | where the local backend's machine keeps code |
|                    |                        | bundles unpacked (a server uses its home's) |
| SHOAL_ALLOW_APT | 0 | 1 lets an image build apt-get install packages the host lacks |
| SHOAL_IMAGE_ID | (none) | set in a container: the digest of the image it runs in |
| SHOAL_VOLUMES | (none) | set in a container: JSON map of its volumes' paths to folders |
| SHOAL_MOUNT_ROOT | (none) | set in a container: where it may build its own root |
| SHOAL_STORED_SPAWNS | (none) | set in a container: its control plane keeps its spawns by id |
| SHOAL_BACKEND | local | where containers run: a registered backend (or --backend) |
| SHOAL_RAY_ADDRESS | auto | the Ray cluster the ray backend attaches to (or |
|                   |      | --ray-address): a GCS address, or auto for this machine's |
| SHOAL_NODE | (none) | set in a container on a cluster: the node it runs on |
| SHOAL_LOG_BYTES | 10485760 | bytes of an app's log file before it is rotated |
| SHOAL_LOG_FILES | 5 | log files kept per app (the current one and rotated ones) |
| SHOAL_LOG_FORMAT | text | the server's own log (and the container output it relays): |
|                  |      | text, or json (one object per line) |
| SHOAL_RECORD_INPUTS | 1 | a server records each function's arrivals, run times and |
|                     |   | container starts on disk, for `shoal simulate` (0: not) |
| SHOAL_RECORD_LIMIT | 200000 | inputs (and containers) kept per function: a ring |
| SHOAL_ISOLATION | (auto) | on: local containers run in jails (bubblewrap); off: as plain |
|                 |        | processes; unset: on for `shoal server` where bubblewrap |
|                 |        | works, off for the embedded server (or --isolation) |
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Setting:
    """One environment variable: its name, default and parser."""

    name: str
    default: str
    help: str


#: The whole table; see the module docstring.
SETTINGS: Final[dict[str, Setting]] = {
    s.name: s
    for s in (
        Setting("SHOAL_MAX_PAYLOAD_BYTES", str(64 * 1024 * 1024), "largest pickled payload"),
        Setting("SHOAL_SHUTDOWN_GRACE", "5.0", "seconds a stopping container gets"),
        Setting("SHOAL_FORK_SERVER", "1", "fork local containers from a warm process"),
        Setting("SHOAL_MAX_REQUEST_BYTES", str(16 * 1024 * 1024), "largest HTTP request body"),
        Setting("SHOAL_GATEWAY_TIMEOUT", "150", "seconds a request may wait for its response"),
        Setting("SHOAL_GATEWAY_MAX_CONNECTIONS", "1000", "open HTTP connections at once"),
        Setting("SHOAL_GATEWAY_HEADER_TIMEOUT", "10", "seconds to send a request's headers"),
        Setting("SHOAL_GATEWAY_BODY_TIMEOUT", "30", "seconds a request body may stall"),
        Setting("SHOAL_GATEWAY_TOKEN", "", "token for requires_auth endpoints (random if unset)"),
        Setting("SHOAL_MAX_CONTAINERS", "", "containers at once (default: 8 per CPU, >= 16)"),
        Setting("SHOAL_CONTAINER_TRANSPORT", "unix", "unix or tcp, for containers' connections"),
        Setting("SHOAL_HANDSHAKE_TIMEOUT", "10", "seconds a connection has to authenticate"),
        Setting("SHOAL_CONTAINER_TOKEN", "", "secret a container presents to the control plane"),
        Setting("SHOAL_HOME", "", "a server's state directory (default ~/.shoal)"),
        Setting("SHOAL_SERVER_URL", "", "the server clients use"),
        Setting("SHOAL_TOKEN", "", "the access token clients present"),
        Setting("SHOAL_RESULT_TTL", "86400", "seconds a durable spawn's outcome is kept"),
        Setting("SHOAL_CONFIG", "", "the client's profile file (default ~/.shoal.toml)"),
        Setting("SHOAL_LOG_LINES", "5000", "lines of container output a server keeps per app"),
        Setting("SHOAL_IMAGE_CACHE", "", "built images (default ~/.cache/shoal/images)"),
        Setting("SHOAL_BUNDLE_CACHE", "", "unpacked code bundles (~/.cache/shoal/bundles)"),
        Setting("SHOAL_ALLOW_APT", "0", "let image builds apt-get install missing packages"),
        Setting("SHOAL_IMAGE_ID", "", "in a container: the digest of its image"),
        Setting("SHOAL_VOLUMES", "", "in a container: its volumes (path -> folder, JSON)"),
        Setting("SHOAL_MOUNT_ROOT", "", "in a container: a folder for its own root"),
        Setting("SHOAL_STORED_SPAWNS", "", "in a container: spawns are kept by id"),
        Setting("SHOAL_BACKEND", "local", "where containers run (a registered backend)"),
        Setting("SHOAL_RAY_ADDRESS", "auto", "the Ray cluster of the ray backend"),
        Setting("SHOAL_NODE", "", "in a container on a cluster: its node"),
        Setting("SHOAL_LOG_BYTES", str(10 * 1024 * 1024), "bytes of a log file before rotation"),
        Setting("SHOAL_LOG_FILES", "5", "log files kept per app"),
        Setting("SHOAL_LOG_FORMAT", "text", "the server's own log: text or json"),
        Setting("SHOAL_RECORD_INPUTS", "1", "record functions' traffic for shoal simulate"),
        Setting("SHOAL_RECORD_LIMIT", "200000", "inputs recorded per function (a ring)"),
        Setting("SHOAL_ISOLATION", "", "jail local containers: on, off, or unset (auto)"),
    )
}


def get(name: str) -> str:
    """Return the value of ``name`` from the environment, or its default."""
    return os.environ.get(name, SETTINGS[name].default)


def backend() -> str:
    """The name of the backend containers run on."""
    return get("SHOAL_BACKEND").strip() or "local"


def ray_address() -> str:
    """The Ray cluster the ray backend attaches to (``auto``: the one on this machine)."""
    return get("SHOAL_RAY_ADDRESS").strip() or "auto"


def max_payload_bytes() -> int:
    """The largest pickled payload, in bytes, either way."""
    return int(get("SHOAL_MAX_PAYLOAD_BYTES"))


def shutdown_grace() -> float:
    """Seconds a container gets to stop before it is killed."""
    return float(get("SHOAL_SHUTDOWN_GRACE"))


def container_token() -> str:
    """The secret this container presents to its control plane."""
    return get("SHOAL_CONTAINER_TOKEN")


def max_containers() -> int:
    """The most containers one control plane keeps at once, over all its functions."""
    value = get("SHOAL_MAX_CONTAINERS").strip()
    if value:
        return max(1, int(value))
    return max(16, 8 * (os.cpu_count() or 1))


def container_transport() -> str:
    """How containers reach their control plane: ``unix`` or ``tcp``.

    Raises:
        ValueError: any other value.
    """
    value = get("SHOAL_CONTAINER_TRANSPORT").strip().lower()
    if value not in ("unix", "tcp"):
        raise ValueError(f"SHOAL_CONTAINER_TRANSPORT={value!r}: must be unix or tcp")
    return value


def handshake_timeout() -> float:
    """Seconds a new connection to the control plane has to present its token."""
    return float(get("SHOAL_HANDSHAKE_TIMEOUT"))


def isolation() -> bool | None:
    """Whether local containers run isolated: True (on), False (off), None (unset: the
    server's default).

    Raises:
        ValueError: any other value.
    """
    value = get("SHOAL_ISOLATION").strip().lower()
    if value in ("", "auto"):
        return None
    if value in ("1", "on", "true", "yes"):
        return True
    if value in ("0", "off", "false", "no"):
        return False
    raise ValueError(f"SHOAL_ISOLATION={value!r}: must be on, off or auto")


def fork_server() -> bool:
    """Whether the local backend forks containers from a warm process."""
    return get("SHOAL_FORK_SERVER").strip().lower() not in ("0", "false", "no", "off")


def max_request_bytes() -> int:
    """The largest HTTP request body the gateway accepts."""
    return int(get("SHOAL_MAX_REQUEST_BYTES"))


def gateway_timeout() -> float:
    """Seconds the gateway waits for a response to start before answering 504."""
    return float(get("SHOAL_GATEWAY_TIMEOUT"))


def gateway_max_connections() -> int:
    """Open HTTP connections the gateway keeps at once."""
    return max(1, int(get("SHOAL_GATEWAY_MAX_CONNECTIONS")))


def gateway_header_timeout() -> float:
    """Seconds a client has to send a request line and headers."""
    return float(get("SHOAL_GATEWAY_HEADER_TIMEOUT"))


def gateway_body_timeout() -> float:
    """Seconds a request body may go without a new chunk before the request ends."""
    return float(get("SHOAL_GATEWAY_BODY_TIMEOUT"))


def gateway_token() -> str | None:
    """The token ``requires_auth`` endpoints ask for, when one is set."""
    return get("SHOAL_GATEWAY_TOKEN") or None


def home() -> str:
    """A server's state directory."""
    return os.path.expanduser(get("SHOAL_HOME") or "~/.shoal")


def server_url() -> str | None:
    """The server clients are told to use, if any."""
    return get("SHOAL_SERVER_URL").strip() or None


def token() -> str | None:
    """The access token from the environment, if any."""
    return get("SHOAL_TOKEN").strip() or None


def result_ttl() -> float:
    """Seconds a server keeps a durable spawn's outcome."""
    return float(get("SHOAL_RESULT_TTL"))


def log_lines() -> int:
    """Lines of container output a server keeps per app (``shoal app logs``)."""
    return max(1, int(get("SHOAL_LOG_LINES")))


def log_bytes() -> int:
    """Bytes an app's log file grows to before it is rotated."""
    return max(4096, int(get("SHOAL_LOG_BYTES")))


def log_files() -> int:
    """Log files kept per app, the current one included."""
    return max(1, int(get("SHOAL_LOG_FILES")))


def log_format() -> str:
    """How the server writes its own log: ``"text"`` or ``"json"`` (one object a line).

    Raises:
        ValueError: another value.
    """
    value = get("SHOAL_LOG_FORMAT").strip().lower() or "text"
    if value not in ("text", "json"):
        raise ValueError(f"SHOAL_LOG_FORMAT={value!r}: expected text or json")
    return value


def record_inputs() -> bool:
    """Whether a server records its functions' traffic (``shoal simulate``)."""
    return get("SHOAL_RECORD_INPUTS").strip() not in ("0", "", "false", "no")


def record_limit() -> int:
    """Inputs (and containers) recorded per function, newest kept."""
    return max(1000, int(get("SHOAL_RECORD_LIMIT")))


def config_file() -> str:
    """The client's profile file."""
    return os.path.expanduser(get("SHOAL_CONFIG") or "~/.shoal.toml")


def image_cache() -> str:
    """Where the local backend keeps built images, one folder per recipe digest."""
    return os.path.expanduser(get("SHOAL_IMAGE_CACHE") or "~/.cache/shoal/images")


def bundle_cache() -> str:
    """Where a machine keeps code bundles unpacked, one folder per digest."""
    return os.path.expanduser(get("SHOAL_BUNDLE_CACHE") or "~/.cache/shoal/bundles")


def allow_apt() -> bool:
    """Whether an image build may install Debian packages on the host."""
    return get("SHOAL_ALLOW_APT").strip().lower() in ("1", "true", "yes", "on")


def image_id() -> str | None:
    """In a container: the digest of the image it runs in (None: no image)."""
    return get("SHOAL_IMAGE_ID") or None


def volumes() -> str:
    """In a container: its volumes, a JSON map of path to host folder ("" when none)."""
    return get("SHOAL_VOLUMES")


def mount_root() -> str:
    """In a container: the folder under which it builds its own root (for volumes)."""
    return get("SHOAL_MOUNT_ROOT") or os.path.join("/tmp", "shoal-roots")


def stored_spawns() -> bool:
    """In a container: whether its control plane keeps its spawns by id (a server stores
    them; an app run without one keeps them in memory for its life)."""
    return get("SHOAL_STORED_SPAWNS") == "1"


def write_private(path: str, text: str) -> None:
    """Write ``text`` to ``path``, readable by this user only, replaced atomically (a
    reader sees the old file or the new one, never part of one): the home's token,
    a profile, a server's address file."""
    partial = f"{path}.{os.getpid()}.new"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(partial, path)
