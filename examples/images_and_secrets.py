"""An image with its own packages, and secrets that only containers see.

    shoal run examples/images_and_secrets.py

The image is a virtual environment built with uv the first time (its build lines
stream here) and reused on later runs: the function below imports ``six``, which
this process need not have. ``API_KEY`` reaches the container's environment, never
this one's.
"""

import os

import shoal as modal

image = modal.Image.debian_slim().pip_install("six").env({"GREETING": "hello"})
app = modal.App("images-and-secrets", image=image)

with image.imports():
    import six


@app.function(secrets=[modal.Secret.from_dict({"API_KEY": "not-a-real-key"})])
def inside() -> str:
    key = os.environ["API_KEY"]
    return f"{os.environ['GREETING']} from six {six.__version__}; API_KEY has {len(key)} chars"


@app.local_entrypoint()
def main() -> None:
    print(inside.remote())
    print("API_KEY here:", os.environ.get("API_KEY"))
