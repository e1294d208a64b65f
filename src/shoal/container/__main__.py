"""Entry point of a container process: ``python -m shoal.container ADDRESS CONTAINER_ID``.

The token comes from the environment (SHOAL_CONTAINER_TOKEN), not the command
line, so other users cannot read it from the process list.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from typing import NoReturn

from shoal import bridge, context, settings
from shoal.container import lines, mounts, process_group
from shoal.container.runtime import Runtime
from shoal.protocol import payload

#: Seconds between checks that the process that started us is still alive.
_PARENT_POLL = 0.5


def _watch_parent(parent: int) -> None:
    """Exit when the parent process dies, even if the event loop is blocked."""
    while True:
        time.sleep(_PARENT_POLL)
        if os.getppid() != parent:
            process_group.end_members()
            os._exit(1)


def run(address: str, container_id: str) -> NoReturn:
    """Run one container until it is stopped, then exit without waiting for stuck threads.

    Used by ``python -m shoal.container`` and by the fork server's children.
    """
    context.mark_container()
    streams = lines.install()
    payload.pin_limit()
    setup_error = ""
    volumes = settings.volumes()
    if volumes:  # before any thread starts: a mount namespace is per process
        try:
            mounts.apply(volumes, os.path.join(settings.mount_root(), container_id))
        except OSError as exc:
            setup_error = f"container {container_id} cannot mount its volumes: {exc}"
    threading.Thread(
        target=_watch_parent, args=(os.getppid(),), name="shoal-parent-watch", daemon=True
    ).start()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    bridge.use_loop(loop)  # handles in user code answer on this loop (no hop to another)
    try:
        runtime = Runtime(address, container_id, settings.container_token(), setup_error)
        code = loop.run_until_complete(runtime.run())
    except OSError as exc:
        print(f"container {container_id}: cannot reach the control plane: {exc}", file=sys.stderr)
        code = 1
    for stream in streams:
        stream.flush_all()
    process_group.end_members()  # what the user's code started goes with the container
    # A thread still running a timed-out input cannot be joined; leave without it.
    os._exit(code)


def main() -> NoReturn:
    """``python -m shoal.container ADDRESS CONTAINER_ID``."""
    run(sys.argv[1], sys.argv[2])


if __name__ == "__main__":
    main()
