"""The continuous batching example: requests join a running batch and get their own tokens."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "examples"))

import continuous_batching as cb

from conftest import wait_until

PROMPTS = {"the first prompt, a long one": 90, "second": 12, "and a third": 7}


def test_the_engine_admits_requests_mid_generation_with_correct_outputs() -> None:
    model = cb.build_model("tiny", device="cpu")

    async def scenario() -> tuple[dict[str, str], cb.EngineStats]:
        engine = cb.Engine(model, max_batch=8)
        engine.start()
        (first_prompt, first_len), *later = PROMPTS.items()
        first = asyncio.ensure_future(engine.generate(first_prompt, first_len))
        # The engine under test has no event per step; poll its counter.
        while engine.stats.steps < 3:  # noqa: ASYNC110 - then the first one is mid-generation
            await asyncio.sleep(0.001)
        rest = [asyncio.ensure_future(engine.generate(p, n)) for p, n in later]
        outputs = await asyncio.gather(first, *rest)
        await engine.stop()
        return dict(zip(PROMPTS, outputs, strict=True)), engine.stats

    outputs, stats = asyncio.run(scenario())
    assert stats.admitted_mid_flight == 2
    assert stats.largest_batch == 3
    for prompt, max_tokens in PROMPTS.items():
        assert outputs[prompt] == cb.generate_alone(model, prompt, max_tokens)


def test_concurrent_inputs_feed_one_engine_in_a_container() -> None:
    model = cb.build_model("tiny", device="cpu")
    with cb.app.run():
        generator = cb.Generator()
        (first_prompt, first_len), *later = PROMPTS.items()
        first = generator.generate.spawn(first_prompt, max_tokens=first_len)
        wait_until(lambda: generator.engine_stats.remote().steps >= 2, what="first mid-flight")
        rest = [generator.generate.spawn(p, max_tokens=n) for p, n in later]
        outputs = [call.get(timeout=120) for call in [first, *rest]]
        stats = generator.engine_stats.remote()
    assert stats.admitted_mid_flight >= 1
    assert stats.requests == 3
    for output, (prompt, max_tokens) in zip(outputs, PROMPTS.items(), strict=True):
        assert output == cb.generate_alone(model, prompt, max_tokens)
