"""Modal-style: a web front for a job queue. ``POST /jobs`` spawns a job and answers its
id; ``GET /jobs/{id}/status`` reads the job's status from the call graph (the request
that spawned it is the graph's root, the job its child); ``GET /jobs/{id}`` waits for
the result. ``main`` drives it over HTTP and prints one JSON line.
"""

import json
import time
import urllib.request

import shoal as modal

app = modal.App("job-queue")


@app.cls()
class Worker:
    @modal.enter()
    def warm_up(self):
        self.suffix = "!"

    @modal.method()
    def work(self, text: str) -> str:
        time.sleep(1.0)
        return text.upper() + self.suffix


@app.function()
@modal.concurrent(max_inputs=20)
@modal.asgi_app()
def front():
    from fastapi import FastAPI, Request

    web = FastAPI()
    worker = Worker()

    @web.post("/jobs")
    async def submit(request: Request):
        text = (await request.json())["text"]
        call = worker.work.spawn(text)  # blocks this loop briefly, as in Modal
        return {"id": call.object_id}

    @web.get("/jobs/{job_id}/status")
    async def status(job_id: str):
        graph = modal.FunctionCall.from_id(job_id).get_call_graph()
        (job,) = [child for child in graph[0].children if child.function_call_id == job_id]
        return {"status": job.status.name, "root": graph[0].function_name}

    @web.get("/jobs/{job_id}")
    async def result(job_id: str):
        return {"result": modal.FunctionCall.from_id(job_id).get()}

    return web


def _ask(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.loads(reply.read())


@app.local_entrypoint()
def main():
    url = front.get_web_url()
    job = _ask(f"{url}/jobs", {"text": "hello"})["id"]
    seen = []
    for _ in range(600):
        answer = _ask(f"{url}/jobs/{job}/status")
        if not seen or seen[-1] != answer["status"]:
            seen.append(answer["status"])
        if answer["status"] == "SUCCESS":
            break
        time.sleep(0.05)
    print(json.dumps([job[:3], seen[0], seen[-1], answer["root"], _ask(f"{url}/jobs/{job}")]))
