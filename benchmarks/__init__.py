"""Shoal's benchmarks: the workloads named in the issues, each beside a baseline from the same run.

Run ``python -m benchmarks [NAME ...] [--quick]`` from the repository root.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile


def private_home(prefix: str) -> None:
    """Give this process (and what it starts) an empty Shoal home and no profile, removed
    at exit: ``app.run()`` then runs embedded, never on a server the developer runs."""
    home = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, home, True)
    os.environ["SHOAL_HOME"] = home
    os.environ["SHOAL_CONFIG"] = os.path.join(home, "no-profile.toml")
    os.environ.pop("SHOAL_SERVER_URL", None)
    os.environ.pop("SHOAL_TOKEN", None)
