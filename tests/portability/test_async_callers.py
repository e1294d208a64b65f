"""Async user code may call Shoal's blocking methods (Modal allows it): the call blocks
that function's event loop, never the container's conversation with its control plane."""

from __future__ import annotations

import os
from pathlib import Path

from portability.runner import run_json
from service.harness import ServerProcess

SCRIPT = Path(__file__).parent / "scripts" / "async_callers.py"


def test_blocking_calls_from_async_code_embedded(tmp_path: Path) -> None:
    env = {**os.environ, "SHOAL_HOME": str(tmp_path / "home")}
    env.pop("SHOAL_SERVER_URL", None)
    assert run_json(f"{SCRIPT}::basic", env) == [10, 12, 5]


def test_spawn_and_poll_from_async_code_on_a_server(server: ServerProcess) -> None:
    basic, polled = run_json(f"{SCRIPT}::main", server.env)
    assert basic == [10, 12, 5]
    assert polled == ["fc-", "not ready", 14]  # get(timeout=0) answers at once, then the result
