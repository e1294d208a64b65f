"""Fixtures of the service tests: a running server with the service app deployed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.harness import ServerProcess


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A fresh ``shoal server`` (stopped after the test)."""
    instance = ServerProcess(tmp_path, {"SVC_TICKS": "svc-ticks"}).start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def deployed(server: ServerProcess) -> ServerProcess:
    """The server, with ``apps/service_app.py`` deployed as app ``svc``."""
    server.deploy()
    return server
