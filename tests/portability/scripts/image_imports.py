"""Modal-style: a package only the image would have, imported under ``image.imports()``.

The caller's process skips the import; the container of the image runs it, and since
this image really lacks the package, the call fails there with the ImportError.
"""

import shoal as modal

image = modal.Image.debian_slim()
other = modal.Image.debian_slim().env({"OTHER": "1"})

with image.imports():
    import shoal_test_not_installed  # noqa: F401

with other.imports():
    import shoal_test_not_installed_either  # noqa: F401

app = modal.App("image-imports")


@app.function(image=image)
def uses_it() -> int:
    return 1


@app.function(image=other)
def uses_the_other() -> int:
    return 2


@app.local_entrypoint()
def main() -> None:
    try:
        uses_it.remote()
    except modal.exception.ContainerInitError as exc:
        print("container of image:", "shoal_test_not_installed" in str(exc))
    # In the other image's container, the first block is not its image's: skipped.
    try:
        print("other image:", uses_the_other.remote())
    except modal.exception.ContainerInitError as exc:
        print("other image failed on:", str(exc).splitlines()[-1])
