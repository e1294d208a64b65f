"""continuous-batching and batched-embed: what gathering concurrent inputs buys.

continuous-batching: the example's engine serving 256 prompts (32 tokens each)
with ``max_inputs=64`` (one forward pass per step for every active request),
against the same engine at ``max_inputs=1`` (one request at a time).

batched-embed: an embedding function called once per input, against the same
function under ``@shoal.batched`` (one call per batch of up to 32 texts).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import shoal
from benchmarks.report import Result

sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))

import continuous_batching as cb
import torch

app = shoal.App("bench-batching")


class _Serving:
    @shoal.enter()
    async def load(self) -> None:
        self.engine = cb.Engine(cb.build_model("tiny"), max_batch=64)
        self.engine.start()

    @shoal.method()
    async def generate(self, prompt: str, max_tokens: int = 32) -> str:
        return await self.engine.generate(prompt, max_tokens)


class Continuous(_Serving):
    pass


class OneAtATime(_Serving):
    pass


Continuous = app.cls(max_containers=1)(shoal.concurrent(max_inputs=64)(Continuous))  # type: ignore[misc]
OneAtATime = app.cls(max_containers=1)(OneAtATime)  # type: ignore[misc]

_WEIGHTS = torch.Generator().manual_seed(1)
_TABLE = torch.randn(cb.VOCAB, 512, generator=_WEIGHTS)
_LAYERS = [torch.randn(512, 512, generator=_WEIGHTS) / 512**0.5 for _ in range(4)]


def _embed(texts: list[str]) -> list[list[float]]:
    """Mean token embedding through a small MLP: a few hundred microseconds per call."""
    hidden = torch.stack([_TABLE[cb.encode(t)].mean(0) for t in texts])
    for layer in _LAYERS:
        hidden = (hidden @ layer).tanh()
    return hidden[:, :256].tolist()


@app.function(max_containers=1)
@shoal.concurrent(max_inputs=32)
def embed_one(text: str) -> list[float]:
    return _embed([text])[0]


@app.function(max_containers=1)
@shoal.batched(max_batch_size=32, wait_ms=5)
def embed_batched(texts: list[str]) -> list[list[float]]:
    return _embed(texts)


def _tokens_per_s(cls: shoal.Cls, prompts: list[str], max_tokens: int) -> float:  # type: ignore[type-arg]
    handle = cls().generate
    handle.remote("warm up", max_tokens=1)
    started = time.perf_counter()
    outputs = list(handle.map(prompts, kwargs={"max_tokens": max_tokens}))
    elapsed = time.perf_counter() - started
    assert len(outputs) == len(prompts)
    return len(prompts) * max_tokens / elapsed


def _inputs_per_s(fn: shoal.Function, texts: list[str]) -> float:  # type: ignore[type-arg]
    list(fn.map(texts[:64]))  # container up, code paths warm
    started = time.perf_counter()
    vectors = list(fn.map(texts))
    elapsed = time.perf_counter() - started
    assert len(vectors) == len(texts) and len(vectors[0]) == 256
    return len(texts) / elapsed


def run(name: str, quick: bool) -> Result:
    result = Result(name)
    with app.run():
        if name == "continuous-batching":
            prompts = [f"prompt number {i}: " for i in range(64 if quick else 256)]
            tokens = 16 if quick else 32
            result.baseline["tokens_per_s_max_inputs_1"] = _tokens_per_s(
                OneAtATime, prompts, tokens
            )
            result.figures["tokens_per_s_max_inputs_64"] = _tokens_per_s(
                Continuous, prompts, tokens
            )
            result.figures["ratio"] = result.ratio(
                "tokens_per_s_max_inputs_64", "tokens_per_s_max_inputs_1"
            )
            device = "cuda" if torch.cuda.is_available() else "cpu"
            result.notes = f"{len(prompts)} prompts x {tokens} tokens on {device}"
        else:
            texts = [f"some text to embed, number {i}" for i in range(1_000 if quick else 5_000)]
            result.baseline["inputs_per_s_unbatched"] = _inputs_per_s(embed_one, texts)
            result.figures["inputs_per_s_batched"] = _inputs_per_s(embed_batched, texts)
            result.figures["ratio"] = result.ratio("inputs_per_s_batched", "inputs_per_s_unbatched")
            result.notes = f"{len(texts)} texts, batches of up to 32"
    return result
