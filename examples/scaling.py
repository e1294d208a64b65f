"""Watch a pool grow, idle out, and follow update_autoscaler while the app runs.

shoal run examples/scaling.py
"""

import time

import shoal

app = shoal.App("scaling")


@app.function(min_containers=1, scaledown_window=2)
@shoal.concurrent(max_inputs=5)
def work(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def show(label: str) -> None:
    stats = work.stats()
    print(
        f"{label:<34} containers={stats.containers} queued={stats.queued} running={stats.running}"
    )


@app.local_entrypoint()
def main() -> None:
    while work.stats().ready < 1:  # min_containers=1 starts one with no traffic
        time.sleep(0.05)
    show("warm, no traffic")

    calls = [work.spawn(1.0) for _ in range(20)]  # 20 inputs / 5 per container -> 4
    time.sleep(0.5)
    show("20 inputs in flight")
    for call in calls:
        call.get()

    time.sleep(3)  # past scaledown_window: back down to min_containers
    show("idle for longer than the window")

    work.update_autoscaler(min_containers=3)
    while work.stats().ready < 3:
        time.sleep(0.05)
    show("after update_autoscaler(min=3)")
