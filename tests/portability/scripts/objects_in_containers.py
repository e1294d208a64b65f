"""Modal-style: objects of classes made only inside containers (the caller never makes
one), with and without parameters, called and spawned. Prints one JSON line."""

import json

import shoal as modal

app = modal.App("objects-in-containers")


@app.cls()
class Greeter:
    @modal.method()
    def greet(self, name: str) -> str:
        return f"hello {name}"


@app.cls()
class Scaler:
    factor: int = modal.parameter(default=1)

    @modal.enter()
    def ready(self):
        self.calls = 0

    @modal.method()
    def scale(self, x: int) -> int:
        self.calls += 1
        return x * self.factor


@app.function()
def uses_objects(x: int) -> list:
    spawned = Scaler(factor=5).scale.spawn(x)
    graph = spawned.get_call_graph()
    return [
        Greeter().greet.remote("there"),
        Scaler().scale.remote(x),
        Scaler(factor=3).scale.remote(x),
        spawned.get(),
        [child.function_name for child in graph[0].children],
    ]


@app.local_entrypoint()
def main():
    print(json.dumps(uses_objects.remote(7)))
