"""Class objects first made inside a container get their pools on first use, with no
server and on one (Modal's pattern: a web endpoint or function makes ``Model()``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from portability.runner import run_json
from service.harness import ServerProcess

SCRIPT = Path(__file__).parent / "scripts" / "objects_in_containers.py"
EXPECTED = ["hello there", 7, 21, 35]


def _check(answer: Any) -> None:
    assert answer[:4] == EXPECTED
    (spawned,) = answer[4]
    assert spawned.startswith("Scaler#") and spawned.endswith(".scale")  # named by digest


def test_class_objects_made_in_a_container_embedded(tmp_path: Path) -> None:
    env = {**os.environ, "SHOAL_HOME": str(tmp_path / "home")}
    env.pop("SHOAL_SERVER_URL", None)
    _check(run_json(SCRIPT, env))


def test_class_objects_made_in_a_container_on_a_server(server: ServerProcess) -> None:
    _check(run_json(SCRIPT, server.env))
