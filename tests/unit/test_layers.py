"""The layers' import contracts (pyproject.toml) hold, and a wrong arrow breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(source: Path) -> subprocess.CompletedProcess[str]:
    """Check the contracts against the package under ``source`` (first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(source)}
    return subprocess.run(
        [str(LINT), "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_tree_keeps_every_contract() -> None:
    done = _lint(ROOT / "src")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_an_upward_import_breaks_the_build(tmp_path: Path) -> None:
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "shoal", copy / "shoal", ignore=shutil.ignore_patterns("*.pyc"))
    markers = copy / "shoal" / "protocol" / "markers.py"
    markers.write_text(markers.read_text() + "\nimport shoal.server.apps  # wrong arrow\n")
    done = _lint(copy)
    assert done.returncode != 0
    assert "protocol is the bottom layer" in done.stdout
    assert "shoal.protocol.markers -> shoal.server.apps" in done.stdout
