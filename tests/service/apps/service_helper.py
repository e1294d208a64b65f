"""A local module the service app imports: shipped in its bundle."""

VERSION = 1


def times(a: int, b: int) -> int:
    return a * b
