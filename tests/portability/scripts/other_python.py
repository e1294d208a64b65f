"""An image on another Python than the caller's: ``shoal run other_python.py``.

The version comes from SHOAL_TEST_PYTHON (default 3.12); it prints one JSON line.
"""

import json
import os
import sys

import shoal as modal

VERSION = os.environ.get("SHOAL_TEST_PYTHON", "3.12")
app = modal.App("other-python", image=modal.Image.debian_slim(python_version=VERSION))


@app.function()
def version() -> list[int]:
    return list(sys.version_info[:2])


@app.local_entrypoint()
def main() -> None:
    print(json.dumps({"inside": version.remote(), "caller": list(sys.version_info[:2])}))
