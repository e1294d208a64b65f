"""Modal-style: an image with a pip package, env vars, build commands and local files.

Run as ``shoal run images.py``; it prints one JSON line the test reads.
"""

import json
import os
import sys

import shoal as modal

HERE = os.path.dirname(os.path.abspath(__file__))


def bake() -> None:
    """Runs once at build time, in the image (Modal's run_function: download weights...)."""
    import six

    with open("baked.txt", "w") as out:
        out.write(f"baked with six {six.__version__}")


# The helper module lives in a folder that is not on the container's import path:
# only the image makes it importable there.
sys.path.insert(0, os.path.join(HERE, "image_lib"))
image = (
    modal.Image.debian_slim()
    .pip_install("six==1.16.0")
    .env({"GREETING_MODE": "loud"})
    .run_commands("echo built-by-run-commands > made.txt")
    .add_local_file(os.path.join(HERE, "assets", "answer.txt"), "/root/data/answer.txt")
    .add_local_python_source("greeter")
    .run_function(bake)
)
sys.path.pop(0)

app = modal.App("images-example", image=image)

with image.imports():
    import six  # the caller's environment need not have it


@app.function()
def inside() -> dict:
    import greeter

    try:
        import httpx  # noqa: F401 - installed where the caller runs, not in the image

        leaked = True
    except ImportError:
        leaked = False
    return {
        "python": sys.executable,
        "six": six.__version__,
        "mode": os.environ.get("GREETING_MODE"),
        "cwd": os.getcwd(),
        "made": open("made.txt").read().strip(),
        "answer": open("data/answer.txt").read().strip(),  # the container starts in /root
        "greeting": greeter.greet("shoal"),
        "baked": open("baked.txt").read(),
        "leaked": leaked,
    }


@app.function(image=modal.Image.debian_slim())
def bare() -> bool:
    try:
        import six  # noqa: F401

        return True
    except ImportError:
        return False


@app.local_entrypoint()
def main() -> None:
    print(json.dumps({"inside": inside.remote(), "bare_has_six": bare.remote()}))
