"""The contract every backend keeps, run against each one (start, stop, list, exit)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Iterator

import pytest

from shoal.backends import get_backend, names
from shoal.backends.base import Backend, ContainerLaunch, Preload
from shoal.exception import InvalidError

#: Each registered backend, and the local one both ways: containers forked from a
#: prepared fork server, and fresh interpreters. The ray backend runs on the test
#: session's two-node cluster (skipped where the ray extra is not installed).
BACKENDS = [*names(), "local-forked"]

#: Nothing to import: a fork server prepared with it loads only Shoal.
PRELOAD = Preload(module_kind="serialized", module_name="", module_file="", sys_path=())


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    name = request.param.removesuffix("-forked")
    if name == "ray":
        cluster = request.getfixturevalue("cluster")
        yield get_backend(name, cluster.address)
        return
    yield get_backend(name)


@pytest.fixture
def preload(request: pytest.FixtureRequest) -> Preload | None:
    return PRELOAD if request.node.callspec.params["backend"].endswith("-forked") else None


def launch(
    backend: Backend, container_id: str, address: str, preload: Preload | None
) -> ContainerLaunch:
    """A launch on the backend's last node (a cluster's second one; "" on one machine)."""
    node = list(backend.machines())[-1]
    return ContainerLaunch(
        container_id=container_id,
        label=container_id,
        address=address,
        token="t",
        preload=preload,
        node=node,
    )


async def prepared(backend: Backend, preload: Preload | None) -> Backend:
    await backend.open()
    if preload is not None:
        await backend.prepare(preload)
    return backend


class _SilentServer:
    """Accepts connections and never answers: the container waits, it does not exit."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self, path: str) -> None:
        async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.writers.append(writer)

        self.server = await asyncio.start_unix_server(hold, path)

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def test_a_container_that_cannot_connect_exits_and_is_reported_once(
    backend: Backend, preload: Preload | None
) -> None:
    async def scenario() -> list[tuple[str, int | None]]:
        exits: list[tuple[str, int | None]] = []
        await prepared(backend, preload)
        on_exit = lambda i, c: exits.append((i, c))  # noqa: E731
        await backend.start(launch(backend, "c1", "/nonexistent/socket", preload), on_exit)
        for _ in range(500):
            if exits:
                break
            await asyncio.sleep(0.02)
        assert backend.list() == []
        await backend.close()
        return exits

    exits = asyncio.run(scenario())
    assert exits == [("c1", 1)]


def test_stop_kills_after_the_grace_and_list_follows(
    backend: Backend, preload: Preload | None
) -> None:
    async def scenario() -> list[str]:
        exits: list[str] = []
        await prepared(backend, preload)
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "s.sock")
            server = _SilentServer()
            await server.start(path)
            pid = await backend.start(
                launch(backend, "c2", path, preload), lambda i, c: exits.append(i)
            )
            assert pid is None or pid > 0
            assert backend.list() == ["c2"]
            await backend.stop("c2", grace=0.1)
            assert backend.list() == []
            await backend.stop("c2", grace=0.1)  # already gone: a no-op
            await backend.stop("unknown", grace=0.1)
            await backend.close()
            await server.close()
        await asyncio.sleep(0)
        return exits

    assert asyncio.run(scenario()) == ["c2"]


def test_close_stops_every_container(backend: Backend, preload: Preload | None) -> None:
    async def scenario() -> int:
        exits: list[str] = []
        await prepared(backend, preload)
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "s.sock")
            server = _SilentServer()
            await server.start(path)
            for n in range(3):
                await backend.start(
                    launch(backend, f"c{n}", path, preload), lambda i, c: exits.append(i)
                )
            assert len(backend.list()) == 3
            await backend.close()
            await server.close()
        await asyncio.sleep(0)
        return len(exits)

    assert asyncio.run(scenario()) == 3


def test_unknown_backends_name_the_choices() -> None:
    with pytest.raises(InvalidError, match="'local'"):
        get_backend("kubernetes")


def test_shoal_backend_picks_a_registered_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    from shoal.backends import register
    from shoal.backends.local import LocalBackend

    monkeypatch.setenv("SHOAL_BACKEND", "nowhere")
    with pytest.raises(InvalidError, match="unknown backend 'nowhere'; available: 'local'"):
        get_backend()
    monkeypatch.setenv("SHOAL_BACKEND", "local")
    assert isinstance(get_backend(), LocalBackend)
    with pytest.raises(InvalidError, match="module:Class"):
        register("broken", "no-colon-here")
    register("not-a-backend", "shoal.settings:Setting")
    try:
        with pytest.raises(InvalidError, match="is not a shoal Backend"):
            get_backend("not-a-backend")
    finally:
        from shoal import backends

        backends._REGISTRY.pop("not-a-backend", None)
