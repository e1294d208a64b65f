"""The control plane's private directory, and the sweeping of those their owners left behind.

Each control plane keeps its socket in a fresh directory (mode 0700) under the
system's temporary folder, with an ``owner`` file naming the process that made
it: its pid and its start time, so a reused pid is not taken for the owner. A
control plane that is SIGKILLed cannot remove its directory; the next one to
start removes every such directory whose owner is gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Final

#: Prefix of every control plane's directory.
PREFIX: Final = "shoal-"
#: The file, inside the directory, that names its owner.
OWNER: Final = "owner"


def _start_time(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot, from /proc), or ``None`` if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return fields[19].decode()  # field 22 of stat; the 20th after "(comm)"


def _owner_alive(directory: Path) -> bool:
    """Whether the process that made ``directory`` still runs (``True`` when unsure)."""
    try:
        pid_text, started = (directory / OWNER).read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return True  # no owner file (being made, or not ours to judge): leave it
    return _start_time(pid) == started


#: The process that swept last (a forked child sweeps again).
_swept_by: int | None = None


def create() -> str:
    """Make a new private directory owned by this process; return its path.

    Directories of control planes that died without cleaning up are removed first, on
    the first call in a process: a process that runs app after app (an embedded server
    starts with each) does not scan the temporary folder each time.
    """
    global _swept_by
    if _swept_by != os.getpid():
        sweep()
        _swept_by = os.getpid()
    directory = tempfile.mkdtemp(prefix=PREFIX)
    os.chmod(directory, 0o700)
    me = os.getpid()
    Path(directory, OWNER).write_text(f"{me} {_start_time(me) or 0}\n")
    return directory


def sweep(root: str | None = None) -> list[str]:
    """Remove this user's control-plane directories whose owner has exited; return them."""
    base = Path(root or tempfile.gettempdir())
    removed = []
    uid = os.getuid()
    with contextlib.suppress(OSError):
        for directory in base.glob(PREFIX + "*"):
            with contextlib.suppress(OSError):
                if directory.stat().st_uid != uid or not directory.is_dir():
                    continue
                if not _owner_alive(directory):
                    shutil.rmtree(directory, ignore_errors=True)
                    removed.append(str(directory))
    return removed
