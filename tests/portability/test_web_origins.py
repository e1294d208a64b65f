"""A web app that writes absolute paths (redirects, forms) works from its endpoint's
URL: each endpoint is also served at the root of a port of its own, as on Modal."""

from __future__ import annotations

import os
from pathlib import Path

from portability.runner import run_json
from service.harness import ServerProcess

SCRIPT = Path(__file__).parent / "scripts" / "absolute_paths.py"
EXPECTED = [True, True, "not ready", [2, 2, 2, 3, 3, 5]]


def test_absolute_paths_embedded(tmp_path: Path) -> None:
    env = {**os.environ, "SHOAL_HOME": str(tmp_path / "home")}
    env.pop("SHOAL_SERVER_URL", None)
    assert run_json(SCRIPT, env) == EXPECTED


def test_absolute_paths_on_a_server(server: ServerProcess) -> None:
    assert run_json(SCRIPT, server.env) == EXPECTED
