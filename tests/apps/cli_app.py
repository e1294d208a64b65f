"""An app for the ``shoal run`` tests."""

import shoal

app = shoal.App("cli")


@app.function()
def square(x: int = 3) -> int:
    return x * x


@app.function()
def power(base: int, exp: int = 2) -> int:
    """Raise BASE to EXP."""
    return base**exp


@app.cls()
class Adder:
    offset: int = shoal.parameter(default=10)

    @shoal.method()
    def add(self, x: int, twice: bool = False) -> int:
        return self.offset + (2 * x if twice else x)


@app.local_entrypoint()
def main(count: int = 4, word: str = "hi") -> None:
    print("squares:", list(square.map(range(count))), word)


@app.local_entrypoint()
def crash() -> None:
    square.remote("not a number")  # type: ignore[arg-type]


@app.local_entrypoint()
def map_crash() -> None:
    print(list(power.map([1, 2, None])))  # type: ignore[list-item]


@app.local_entrypoint()
async def awaited(x: int = 6) -> None:
    print("awaited:", await square.remote.aio(x))


@app.function()
@shoal.batched(max_batch_size=4, wait_ms=10)
def doubles(xs: list[int]) -> list[int]:
    return [2 * x for x in xs]


if __name__ == "__main__":
    raise SystemExit("the __main__ block must not run under shoal run")


@app.local_entrypoint()
def hold(gate: str) -> None:
    """Square five numbers, then wait (at most a minute) until file GATE exists."""
    import os
    import time

    print("squares:", list(square.map(range(5))), flush=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.05)
