"""An app for the ``shoal run`` tests."""

import shoal

app = shoal.App("cli")


@app.function()
def square(x: int = 3) -> int:
    return x * x


@app.local_entrypoint()
def main(count: int = 4, word: str = "hi") -> None:
    print("squares:", list(square.map(range(count))), word)


@app.local_entrypoint()
def crash() -> None:
    square.remote("not a number")  # type: ignore[arg-type]


if __name__ == "__main__":
    raise SystemExit("the __main__ block must not run under shoal run")
