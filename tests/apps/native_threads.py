"""Imports PyTorch, which starts a native thread pool: forking beside it is unsafe."""

import os

import torch  # noqa: F401 - imported for its threads

import shoal

app = shoal.App("native-threads")


@app.function()
def parent() -> int:
    return os.getppid()
