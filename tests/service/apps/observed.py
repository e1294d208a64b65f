"""An app for the metrics a container reports: a batched function, a class with an enter hook."""

import time

import shoal

app = shoal.App("observed")


@app.function()
@shoal.batched(max_batch_size=4, wait_ms=100)
def double(xs: list[int]) -> list[int]:
    return [x * 2 for x in xs]


@app.cls()
class Warm:
    @shoal.enter()
    def load(self) -> None:
        time.sleep(0.3)  # a model's weights, say

    @shoal.method()
    def hello(self) -> str:
        return "warm"
