"""``shoal.Sandbox``: run commands of code you did not write, isolated, as Modal's.

A sandbox runs on the server (or the embedded one) in a jail of its own (see
:mod:`shoal.server.sandboxes`): ``Sandbox.create("python", "-c", code, app=app)`` starts
it, ``sb.exec(...)`` starts more commands in it (a
:class:`~shoal.container_process.ContainerProcess`), ``sb.filesystem`` (and the older
``sb.open``/``sb.ls``/``sb.mkdir``/``sb.rm``) reads and writes its files from inside it,
``sb.wait()`` waits for its own command, and ``sb.terminate()`` ends it. Exit codes are
Modal's: 124 when its timeout ended it, 137 when it was terminated. It lives until its
command exits, it is terminated, its timeout passes, or its app stops; not with the
client that created it.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import enum
import io
import os
import urllib.parse
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shoal.bridge import Bridged, bridged, bridged_iter
from shoal.client.container_process import ContainerProcess, Exits, StreamReader, StreamWriter
from shoal.client.image import Image
from shoal.client.objects import request
from shoal.client.volume import Volume
from shoal.client.volume import mounts as volume_mounts
from shoal.context import channel as call_channel
from shoal.exception import InvalidError, NotFoundError, SandboxTerminatedError, SandboxTimeoutError
from shoal.spec.image import dump_recipe, load_recipe

if TYPE_CHECKING:
    from shoal.client.app import App
    from shoal.client.secret import Secret

#: What Sandbox.create does not take yet, and says so rather than ignore.
_NOT_YET = ("gpu", "region", "h2_ports", "network_file_systems")


def _app_name(app: App | str | None) -> str:
    if call_channel() is not None:
        return ""  # inside a container: a sandbox of the container's own app, always
    if app is None:
        raise InvalidError(
            "Sandbox.create needs app= (an App: shoal.App.lookup(name, create_if_missing=True))"
        )
    name = app if isinstance(app, str) else (app.name or app.app_id)
    if not name:
        raise InvalidError("Sandbox.create: the app has no name (name it, or look it up)")
    return name


def _secrets_of(secrets: list[Secret] | None) -> list[dict[str, Any]]:
    """``secrets`` as a request carries them: values given here, or a name the server
    looks up (with the keys it must have)."""
    return [
        {
            "name": secret.spec.name or "",
            "values": dict(secret.spec.values),
            "required_keys": list(secret.spec.required_keys),
        }
        for secret in secrets or ()
    ]


def _volumes_of(volumes: Mapping[str, Volume] | None) -> list[dict[str, Any]]:
    """``volumes={...}`` as a request carries them (checked as a function's are)."""
    mounted = volume_mounts(volumes, "Sandbox.create")
    read_only = {os.path.normpath(p): v.is_read_only for p, v in (volumes or {}).items()}
    return [
        {"path": path, "name": name, "create": create, "read_only": read_only[path]}
        for path, name, create in mounted
    ]


async def _create(
    *args: str,
    app: App | str | None = None,
    image: Image | None = None,
    timeout: float = 300,  # noqa: ASYNC109 - Modal's name: the sandbox's lifetime
    idle_timeout: float | None = None,
    workdir: str | None = None,
    secrets: list[Secret] | None = None,
    volumes: Mapping[str, Volume] | None = None,
    cpu: float | None = None,
    memory: int | None = None,
    block_network: bool = False,
    cidr_allowlist: list[str] | None = None,
    name: str | None = None,
    tags: dict[str, str] | None = None,
    pty: bool = False,
    encrypted_ports: Sequence[int] = (),
    unencrypted_ports: Sequence[int] = (),
    **unsupported: Any,
) -> Sandbox:
    given = [key for key, value in unsupported.items() if value not in (None, False, [], {})]
    unknown = [key for key in given if key not in _NOT_YET]
    if unknown:
        raise TypeError(f"Sandbox.create() got unexpected keyword arguments {unknown}")
    if given:
        raise InvalidError(f"Sandbox.create: {', '.join(given)} not supported yet")
    answer = await request(
        "sandbox_create",
        app=_app_name(app),
        command=list(args),
        timeout=float(timeout),
        workdir=workdir or "",
        secrets=_secrets_of(secrets),
        volumes=_volumes_of(volumes),
        cpu=cpu,
        memory=memory,
        block_network=bool(block_network),
        cidr_allowlist=None if cidr_allowlist is None else [str(c) for c in cidr_allowlist],
        pty=bool(pty),
        encrypted_ports=[int(p) for p in encrypted_ports],
        unencrypted_ports=[int(p) for p in unencrypted_ports],
        name=name or "",
        tags=dict(tags or {}),
        idle_timeout=idle_timeout,
        image=dump_recipe(image.recipe) if image is not None else b"",
    )
    return Sandbox(answer["object_id"])


async def _from_id(sandbox_id: str) -> Sandbox:
    answer = await request("sandbox_get", object_id=sandbox_id)
    return Sandbox(answer["object_id"])


async def _from_name(app_name: str, name: str) -> Sandbox:
    answer = await request("sandbox_get", app=app_name, name=name)
    return Sandbox(answer["object_id"])


async def _list(*, app_id: str | None = None, tags: dict[str, str] | None = None) -> list[Sandbox]:
    rows = await request("sandbox_list", app=app_id or "", tags=dict(tags or {}))
    return [Sandbox(row["object_id"]) for row in rows]


@dataclass(frozen=True)
class Tunnel:
    """Where a sandbox's declared port is reached from outside (``sb.tunnels()``)."""

    url: str
    #: The host's loopback address and port of an unencrypted port (None: encrypted).
    unencrypted_host: str | None = None
    unencrypted_port: int | None = None

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urllib.parse.urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def tls_socket(self) -> tuple[str, int]:
        """The (host, port) of its URL."""
        return self.host, self.port

    @property
    def tcp_socket(self) -> tuple[str, int]:
        """The (host, port) of the raw TCP port of an unencrypted port.

        Raises:
            InvalidError: the port was declared encrypted.
        """
        if self.unencrypted_host is None or self.unencrypted_port is None:
            raise InvalidError("this port was declared encrypted: use its url, with the token")
        return self.unencrypted_host, self.unencrypted_port


class Sandbox(Exits):
    """A running (or ended) sandbox (see the module docstring); its exit code: its
    command's, 124 (its timeout) or 137 (terminated)."""

    #: ``Sandbox.create(*cmd, app=, image=, timeout=300, idle_timeout=, workdir=, secrets=,
    #: volumes=, cpu=, memory=, block_network=, cidr_allowlist=, encrypted_ports=,
    #: unencrypted_ports=, name=, tags=, pty=)``.
    create: Bridged[..., Sandbox] = Bridged(_create)
    #: The sandbox of that id.
    from_id: Bridged[..., Sandbox] = Bridged(_from_id)
    #: The running sandbox named ``name`` in app ``app_name``.
    from_name: Bridged[..., Sandbox] = Bridged(_from_name)
    #: The running sandboxes (of app ``app_id``, with every tag of ``tags``).
    list: Bridged[..., list[Sandbox]] = Bridged(_list)

    def __init__(self, object_id: str) -> None:
        self.object_id = object_id
        self._returncode: int | None = None
        self._reason = ""
        self.stdout: StreamReader[str] = StreamReader(object_id, 0, 1, True)
        self.stderr: StreamReader[str] = StreamReader(object_id, 0, 2, True)
        self.stdin = StreamWriter(object_id, 0)
        self.filesystem = Filesystem(object_id)

    # -- its life --------------------------------------------------------------------

    async def _ask(self, wait: float) -> int | None:
        answer = await request("sandbox_wait", object_id=self.object_id, wait=wait)
        if answer.get("returncode") is not None:
            self._returncode = int(answer["returncode"])
            self._reason = str(answer.get("reason", ""))
        return self._returncode

    @bridged
    async def wait(self, raise_on_termination: bool = True) -> None:
        """Wait for it to end. With ``raise_on_termination``, one ended by its timeout
        raises ``SandboxTimeoutError``, one terminated ``SandboxTerminatedError``."""
        await self._until_ended()
        if raise_on_termination:
            if self._reason in ("timeout", "idle timeout"):
                raise SandboxTimeoutError(f"sandbox {self.object_id} reached its {self._reason}")
            if self._reason in ("terminated", "agent lost", "oom"):
                said = "its memory limit" if self._reason == "oom" else self._reason
                raise SandboxTerminatedError(f"sandbox {self.object_id} ended: {said}")

    @property
    def termination_reason(self) -> str:
        """Why it ended: ``exited``, ``terminated``, ``timeout``, ``idle timeout`` (no exec,
        stdin or file use for ``idle_timeout`` seconds), ``oom`` (over its memory limit) or
        ``agent lost`` (what ran inside killed it); "" while it runs."""
        return self._reason

    @bridged
    async def terminate(self) -> None:
        """End it now: everything in it is killed (its exit code: 137)."""
        await request("sandbox_terminate", object_id=self.object_id)

    @bridged
    async def tunnels(self, timeout: float = 50) -> dict[int, Tunnel]:  # noqa: ASYNC109
        """Each port declared at create (``encrypted_ports``, ``unencrypted_ports``) and
        where it is reached: an encrypted one on the server's gateway, behind the server's
        token (``Authorization: Bearer ...``); an unencrypted one directly, on the host's
        loopback, with no token. ``timeout`` is Modal's; the ports are ready at create."""
        del timeout
        found = await request("sandbox_tunnels", object_id=self.object_id)
        return {
            int(port): Tunnel(row["url"], *(row["unencrypted"] or (None, None)))
            for port, row in found.items()
        }

    @bridged
    async def snapshot_filesystem(self, timeout: float = 55) -> Image:  # noqa: ASYNC109
        """An :class:`~shoal.Image` of this sandbox's working directory as it is now (its
        image, plus a tar of those files, made inside the sandbox; what is mounted inside
        the folder is left out): a new sandbox of it starts with its own copy of the same
        files in its working directory (the image's build also unpacks them into the
        image's folder). ``timeout`` is Modal's; the snapshot is taken at once. Up to half
        of ``SHOAL_MAX_PAYLOAD_BYTES`` (32 MiB) of files."""
        del timeout
        answer = await request("sandbox_snapshot", object_id=self.object_id)
        return Image(load_recipe(answer["image"]))

    @bridged
    async def set_tags(self, tags: dict[str, str]) -> None:
        """Replace its tags (what ``Sandbox.list(tags=)`` matches)."""
        await request("sandbox_set_tags", object_id=self.object_id, tags=dict(tags))

    @bridged
    async def get_tags(self) -> dict[str, str]:
        return dict((await request("sandbox_get", object_id=self.object_id))["tags"])

    # -- commands ----------------------------------------------------------------------------

    @bridged
    async def exec(
        self,
        *args: str,
        workdir: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - Modal's name: the command's limit
        secrets: builtins.list[Secret] | None = None,
        pty: bool = False,
        bufsize: int = -1,
        text: bool = True,
    ) -> ContainerProcess[Any]:
        """Start ``args`` in the sandbox; its :class:`ContainerProcess`. ``timeout``
        kills it after that many seconds (its code then: -1). ``pty``: on a
        pseudo-terminal of 24 by 80 (its controlling terminal; everything it writes comes
        on ``stdout``, with the terminal's line endings, and ``stdin`` is typed into it)."""
        if not args:
            raise InvalidError("Sandbox.exec needs a command")
        del bufsize  # output is relayed as it comes, in whatever pieces
        answer = await request(
            "sandbox_exec",
            object_id=self.object_id,
            argv=[str(a) for a in args],
            workdir=workdir or "",
            secrets=_secrets_of(secrets),
            timeout=timeout,
            pty=bool(pty),
        )
        return ContainerProcess(self.object_id, int(answer["proc"]), text)

    # -- files (the older API) ------------------------------------------------------------

    def open(self, path: str, mode: str = "r") -> SandboxFile:
        """A file of the sandbox: read whole on open for ``r``/``rb``, written whole on
        close for ``w``/``wb``/``a``/``ab``."""
        return SandboxFile(self.filesystem, path, mode)

    @bridged
    async def ls(self, path: str) -> builtins.list[str]:
        return await self.filesystem.ls.aio(path)

    def watch(
        self,
        path: str,
        filter: builtins.list[FileWatchEventType] | None = None,  # Modal's name
        recursive: bool | None = None,
        timeout: float | None = None,
    ) -> Iterator[FileWatchEvent]:
        """The older name of :meth:`Filesystem.watch`."""
        return self.filesystem.watch(path, filter, recursive, timeout)

    @bridged
    async def mkdir(self, path: str, parents: bool = False) -> None:
        await self.filesystem.mkdir.aio(path, parents=parents)

    @bridged
    async def rm(self, path: str, recursive: bool = False) -> None:
        await self.filesystem.rm.aio(path, recursive=recursive)

    def __repr__(self) -> str:
        return f"Sandbox({self.object_id})"


class FileWatchEventType(enum.Enum):
    """What happened to a watched path."""

    Unknown = "Unknown"
    Access = "Access"
    Create = "Create"
    Modify = "Modify"
    Remove = "Remove"


@dataclass(frozen=True)
class FileWatchEvent:
    """One change :meth:`Filesystem.watch` saw."""

    paths: list[str]
    type: FileWatchEventType


class Filesystem:
    """``sb.filesystem``: the sandbox's files, read and written from inside it (a link in
    the sandbox leads only to the sandbox's own files)."""

    def __init__(self, sandbox_id: str) -> None:
        self._sandbox_id = sandbox_id

    async def _op(self, op: str, path: str, **fields: Any) -> Any:
        try:
            answer = await request(
                "sandbox_file", object_id=self._sandbox_id, action=op, path=path, **fields
            )
        except NotFoundError as exc:
            raise FileNotFoundError(str(exc)) from None
        return answer.get("result")

    @bridged
    async def read_bytes(self, path: str) -> bytes:
        return bytes(await self._op("read", path))

    @bridged
    async def read_text(self, path: str) -> str:
        return bytes(await self._op("read", path)).decode()

    @bridged
    async def write_bytes(self, path: str, data: bytes, append: bool = False) -> None:
        await self._op("write", path, data=bytes(data), append=append)

    @bridged
    async def write_text(self, path: str, text: str, append: bool = False) -> None:
        await self._op("write", path, data=text.encode(), append=append)

    @bridged
    async def ls(self, path: str) -> list[str]:
        return list(await self._op("ls", path))

    @bridged_iter
    async def watch(
        self,
        path: str,
        filter: builtins.list[FileWatchEventType] | None = None,  # Modal's name
        recursive: bool | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - Modal's name: the watch's length
    ) -> AsyncIterator[builtins.list[FileWatchEvent]]:
        """The changes under ``path`` (a file, or a folder: ``recursive``, its whole tree)
        as they happen inside the sandbox, each a :class:`FileWatchEvent` of a type in
        ``filter`` (default: all). It ends after ``timeout`` seconds, when the sandbox
        ends, or when the loop breaks out of it (the watch is removed then)."""
        wanted = set(filter or FileWatchEventType)
        try:
            started = await request(
                "sandbox_watch", object_id=self._sandbox_id, path=path, recursive=bool(recursive)
            )
        except NotFoundError as exc:
            raise FileNotFoundError(str(exc)) from None
        number, offset = started["watch"], 0
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            while deadline is None or loop.time() < deadline:
                wait = 10.0 if deadline is None else max(0.0, min(10.0, deadline - loop.time()))
                got = await request(
                    "sandbox_watch_read",
                    object_id=self._sandbox_id,
                    watch=number,
                    offset=offset,
                    wait=wait,
                )
                offset = got["offset"]
                events = [
                    FileWatchEvent(list(e["paths"]), FileWatchEventType(e["kind"]))
                    for e in got["events"]
                ]
                events = [e for e in events if e.type in wanted]
                if events:
                    yield events
                if got["ended"]:
                    return
        finally:
            with contextlib.suppress(Exception):  # the sandbox (or connection) went first
                await request("sandbox_unwatch", object_id=self._sandbox_id, watch=number)

    @bridged
    async def mkdir(self, path: str, parents: bool = False) -> None:
        await self._op("mkdir", path, parents=parents)

    @bridged
    async def rm(self, path: str, recursive: bool = False) -> None:
        await self._op("rm", path, recursive=recursive)

    @bridged
    async def stat(self, path: str) -> dict[str, Any]:
        return dict(await self._op("stat", path))


class SandboxFile:
    """A file of a sandbox, from ``sb.open`` (read whole, or written whole on close)."""

    def __init__(self, filesystem: Filesystem, path: str, mode: str) -> None:
        if mode not in ("r", "rb", "w", "wb", "a", "ab"):
            raise InvalidError(f"mode {mode!r}: expected r, rb, w, wb, a or ab")
        self._filesystem = filesystem
        self._path = path
        self._mode = mode
        self._binary = "b" in mode
        self._out = io.BytesIO()
        self._data = filesystem.read_bytes(path) if mode.startswith("r") else b""
        self._at = 0
        self.closed = False

    def read(self, size: int = -1) -> Any:
        end = len(self._data) if size < 0 else self._at + size
        chunk, self._at = self._data[self._at : end], min(end, len(self._data))
        return chunk if self._binary else chunk.decode()

    def write(self, data: Any) -> int:
        if self._mode.startswith("r"):
            raise io.UnsupportedOperation("not writable")
        raw = data if isinstance(data, bytes | bytearray) else str(data).encode()
        self._out.write(raw)
        return len(data)

    def close(self) -> None:
        if not self.closed and not self._mode.startswith("r"):
            self._filesystem.write_bytes(
                self._path, self._out.getvalue(), append=self._mode.startswith("a")
            )
        self.closed = True

    def __enter__(self) -> SandboxFile:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
