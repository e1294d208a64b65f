"""Lines printed during an input are that input's, for threads and asyncio tasks alike."""

from __future__ import annotations

import shoal
from apps import talkative
from conftest import wait_until


def _texts(lines: list[shoal.LogLine]) -> list[str]:
    return [line.text for line in lines]


def test_each_input_gets_its_own_lines_on_threads_and_tasks() -> None:
    with talkative.app.run():
        for function, word in ((talkative.chat, "chat"), (talkative.achat, "achat")):
            calls = [function.spawn(n) for n in range(8)]
            ids = [call.get() for call in calls]
            assert ids == [call.object_id for call in calls]
            for n, call in enumerate(calls):
                expected = [f"{word} {n} one", f"{word} {n} two"]
                wait_until(lambda c=call: len(c.get_logs()) >= 2, 10, f"{word} {n}'s lines")
                assert _texts(call.get_logs()) == expected
                found = function.get_logs(input=call.object_id)
                assert _texts(found) == expected
                assert {line.input for line in found} == {call.object_id}
            everything = function.get_logs()
            assert len([line for line in everything if line.stream == "stdout"]) == 16
            assert _texts(function.get_logs(search=f"{word} 3 ")) == [
                f"{word} 3 one",
                f"{word} 3 two",
            ]
            assert len(function.get_logs(tail=3)) == 3
