"""A job queue and a results dict shared by the caller and a pool of workers.

    shoal run examples/dict_and_queue.py

Both are named, so they persist: in the server's store when one runs, otherwise
in this machine's Shoal home (run it twice: the run counter goes up).
"""

import queue

import shoal as modal

app = modal.App("dict-and-queue")
jobs = modal.Queue.from_name("example-jobs", create_if_missing=True)
results = modal.Dict.from_name("example-results", create_if_missing=True)


@app.function()
@modal.concurrent(max_inputs=4)
def worker(_: int) -> int:
    handled = 0
    while True:
        try:
            n = jobs.get(timeout=0.5)
        except queue.Empty:  # no job for half a second: done
            return handled
        results[n] = n * n
        handled += 1


@app.local_entrypoint()
def main() -> None:
    results.clear()
    jobs.put_many(list(range(20)))
    print("handled:", sum(worker.map(range(3))))
    print("squares:", [results[n] for n in range(20)])
    with modal.Dict.ephemeral() as scratch:  # gone after the block
        scratch["runs"] = 1
    runs = modal.Dict.from_name("example-runs", create_if_missing=True)
    runs["count"] = runs.get("count", 0) + 1
    print("runs so far:", runs["count"])
