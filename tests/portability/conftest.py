"""Portability tests share one image cache per session, so each image builds once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.harness import ServerProcess


@pytest.fixture(scope="session", autouse=True)
def image_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = str(tmp_path_factory.mktemp("images"))
    before = os.environ.get("SHOAL_IMAGE_CACHE")
    os.environ["SHOAL_IMAGE_CACHE"] = folder
    yield folder
    if before is None:
        os.environ.pop("SHOAL_IMAGE_CACHE", None)
    else:
        os.environ["SHOAL_IMAGE_CACHE"] = before


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A fresh ``shoal server`` (stopped after the test)."""
    instance = ServerProcess(tmp_path).start()
    yield instance
    instance.stop()
