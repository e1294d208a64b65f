"""An app whose container prints, in an image of its own: ``shoal run`` against a server
shows both the image's build and the container's lines."""

import os
import sys

import shoal

app = shoal.App("chatty-run")

# RUN_TAG makes each test's image new (so it is built while the test watches); the
# container gets the same value from the image's environment.
image = shoal.Image.debian_slim().env({"RUN_TAG": os.environ.get("RUN_TAG", "")})


@app.function(image=image)
def shout(word: str) -> str:
    print(f"out: {word}")
    print(f"err: {word}", file=sys.stderr)
    return word.upper()


@app.local_entrypoint()
def main() -> None:
    print("result", shout.remote("hello"))
