"""Blocking Shoal calls in a module's top-level code run in its containers, as in Modal."""

from __future__ import annotations

import os
from pathlib import Path

from portability.runner import run_json
from service.harness import ServerProcess

SCRIPT = Path(__file__).parent / "scripts" / "module_level.py"


def test_a_dict_written_at_import_in_containers_embedded(tmp_path: Path) -> None:
    env = {**os.environ, "SHOAL_HOME": str(tmp_path / "home")}
    env.pop("SHOAL_SERVER_URL", None)
    out = run_json(SCRIPT, env)
    assert out["found"] == [3, 3]
    assert out["imports"] >= 2  # both functions' containers imported it and wrote


def test_a_dict_written_at_import_in_containers_on_a_server(server: ServerProcess) -> None:
    out = run_json(SCRIPT, server.env)
    assert out["found"] == [3, 3]
    assert out["imports"] >= 2
