"""Starts a thread when imported: forking a process like this is unsafe."""

import os
import threading

import shoal

_ticker = threading.Event()
threading.Thread(target=_ticker.wait, daemon=True).start()

app = shoal.App("threaded")


@app.function()
def parent() -> int:
    return os.getppid()
