"""Running a portability script as a user would, and reading the JSON line it prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def shoal_run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``shoal run -q ARGS...`` in a fresh process; what it did."""
    return subprocess.run(
        [sys.executable, "-m", "shoal.cli", "run", "-q", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def run_json(script: Path | str, env: dict[str, str] | None = None) -> Any:
    """Run ``script``; the JSON value of the last line it printed (it must succeed)."""
    done = shoal_run(str(script), env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])
