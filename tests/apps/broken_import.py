"""Imports in the caller, fails to import in a container."""

import shoal

if not shoal.is_local():
    raise ImportError("no module named 'definitely_missing' (raised on purpose)")

app = shoal.App("broken")


@app.function()
def f() -> int:
    return 1
