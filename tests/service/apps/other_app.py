"""A second deployed app, which the first one's containers must not reach."""

import shoal

app = shoal.App("other")


@app.function()
def private(x: int) -> int:
    return x + 1


@app.function()
def where() -> str:
    """The file this module was loaded from: inside the machine's copy of its bundle."""
    return __file__
