"""A local module that only the image carries (add_local_python_source)."""


def greet(name: str) -> str:
    return f"hello, {name}"
