"""Local containers fork from a warm process when that is safe, and start fresh otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from apps import threaded, warm


def _command(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def test_containers_fork_from_the_fork_server() -> None:
    with warm.app.run():
        parents = set(warm.parent.map(range(3)))
    assert len(parents) == 1
    parent = parents.pop()
    assert parent != os.getpid()


def test_containers_start_fresh_when_the_fork_server_is_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHOAL_FORK_SERVER", "0")
    with warm.app.run():
        assert warm.parent.remote() == os.getpid()


def test_a_module_with_threads_is_not_forked() -> None:
    with threaded.app.run():
        assert threaded.parent.remote() == os.getpid()


def test_a_module_with_native_threads_is_not_forked() -> None:
    from apps import native_threads

    with native_threads.app.run():
        assert native_threads.parent.remote() == os.getpid()
