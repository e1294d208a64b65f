"""A gate inputs wait on until the test opens it (creates the file)."""

import os
import time


def wait_for(path: str, limit: float = 60.0) -> None:
    """Block until ``path`` exists (or ``limit`` seconds pass, so nothing hangs)."""
    deadline = time.monotonic() + limit
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
