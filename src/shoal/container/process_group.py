"""A container's own processes: the user's code may start some; none outlives the container.

Every container leads a process group of its own (its backend starts it in a new
session), and processes the user's code starts join that group unless they ask
for a session of their own. Whoever reaps the container ends the group right
after it exits (the fork server, or the local backend for a process it started).
This module is the container's half, for when nobody is left to do that (its
control plane was SIGKILLed): before it exits, the container kills the other
members of its group itself.

No bare pid is signalled: each member found in ``/proc`` is opened as a pidfd
first and checked again through it, so a pid that exited and was reused in
between is never hit.
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Final

#: Passes over ``/proc``; a member may fork while the first pass kills.
_PASSES: Final = 3


def _group_of(pid: str) -> int | None:
    """The process group of ``pid`` (from ``/proc``), or ``None`` if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # "pid (comm) state ppid pgrp ..."; comm may hold spaces, so split after ")".
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    if fields[0] in (b"Z", b"X"):
        return None  # already dead: its reaper will collect it
    return int(fields[2])


def _members(group: int) -> list[str]:
    me = str(os.getpid())
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit() and name != me]
    except OSError:
        return []
    return [pid for pid in pids if _group_of(pid) == group]


def end_members() -> int:
    """SIGKILL every other process of this container's process group; return how many.

    A no-op unless this process leads its group (a container always does; a test
    that runs the runtime inside another process does not).
    """
    group = os.getpgrp()
    if group != os.getpid() or not hasattr(os, "pidfd_open"):
        return 0
    killed = 0
    for _ in range(_PASSES):
        members = _members(group)
        if not members:
            break
        for pid in members:
            with contextlib.suppress(OSError):
                fd = os.pidfd_open(int(pid))
                try:
                    if _group_of(pid) == group:  # still the same process (the fd pins it)
                        signal.pidfd_send_signal(fd, signal.SIGKILL)
                        killed += 1
                finally:
                    os.close(fd)
    return killed
