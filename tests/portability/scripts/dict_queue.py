"""Modal-style: a named Dict and Queue shared by the caller and containers, and ephemeral ones.

Prints one JSON line the test reads.
"""

import json
import queue

import shoal as modal

app = modal.App("dict-queue-example")

scores = modal.Dict.from_name("shoal-test-scores", create_if_missing=True)
jobs = modal.Queue.from_name("shoal-test-jobs", create_if_missing=True)
runs = modal.Dict.from_name("shoal-test-runs", create_if_missing=True)


@app.function()
def worker(n: int) -> int:
    """Takes jobs from the queue and records each result in the dict."""
    done = 0
    while True:
        job = jobs.get(timeout=1.0) if done < n else None
        if job is None:
            return done
        scores[f"job-{job}"] = job * job
        done += 1


@app.function()
def with_handles(d: modal.Dict, q: modal.Queue) -> int:
    """Handles pass as arguments, as Modal's do."""
    q.put("from a container", partition="side")
    d.update({"x": 1, "y": 2})
    return d.len()


@app.local_entrypoint()
def main() -> None:
    scores.clear()
    jobs.clear(all=True)
    jobs.put_many(list(range(10)))
    done = sum(worker.map([5, 5]))
    out = {
        "done": done,
        "squares": sorted(v for k, v in scores.items() if k.startswith("job-")),
        "left": jobs.len(),
        "runs": runs.get("count", 0),
    }
    runs["count"] = out["runs"] + 1  # persists between runs
    out["skip"] = runs.put("count", -1, skip_if_exists=True)
    out["contains"] = "job-3" in scores and "nope" not in scores
    out["pop"] = scores.pop("job-0")
    try:
        jobs.get(block=True, timeout=0.2)
        out["empty"] = False
    except queue.Empty:
        out["empty"] = True
    out["nonblocking"] = jobs.get(block=False)
    with modal.Dict.ephemeral() as d, modal.Queue.ephemeral() as q:
        out["ephemeral_len"] = with_handles.remote(d, q)
        out["side"] = q.get(partition="side")
        out["ephemeral_items"] = sorted(d.items())
    print(json.dumps(out))
