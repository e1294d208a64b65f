"""An app whose traffic the what-if simulator replays (tests/service/test_simulate.py)."""

import time

import shoal

app = shoal.App("sim")


@app.function(scaledown_window=2)
@shoal.concurrent(max_inputs=10)
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds
