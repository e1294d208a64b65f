"""Pure parts of the service: code bundles, the store's group commits, in-process pipes."""

from __future__ import annotations

import asyncio
import io
import time
import zipfile
from pathlib import Path

import pytest

from shoal.exception import InvalidError
from shoal.protocol import bundle, pipe
from shoal.protocol.messages import CallCancel, Reply, Request
from shoal.server.store import Store, StoredCall


def test_bundles_are_deterministic_and_unpack_whole(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("import helper\n")
    (tmp_path / "helper.py").write_text("X = 1\n")
    files = {"app.py": str(tmp_path / "app.py"), "helper.py": str(tmp_path / "helper.py")}
    first = bundle.pack(files)
    time.sleep(0.01)
    assert bundle.pack(dict(reversed(list(files.items())))) == first
    bundle.unpack(first, str(tmp_path / "out"))
    assert (tmp_path / "out" / "helper.py").read_text() == "X = 1\n"


@pytest.mark.parametrize("name", ["../escape.py", "/etc/passwd", "a/../../b.py"])
def test_unsafe_bundle_paths_are_refused(tmp_path: Path, name: str) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(name, "x")
    with pytest.raises(InvalidError, match="unsafe path"):
        bundle.unpack(out.getvalue(), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    with pytest.raises(InvalidError, match="not a code bundle"):
        bundle.unpack(b"garbage", str(tmp_path / "out"))


def test_store_groups_commits_and_keeps_calls(tmp_path: Path) -> None:
    async def scenario() -> Store:
        store = Store(str(tmp_path / "shoal.db"))
        store.start(asyncio.get_running_loop())
        accepted: list[str] = []
        for i in range(2_000):
            call = StoredCall(f"fc-{i}", "app", "f", "", b"", b"args", None, None, 0.0, None)
            store.add_calls([call], lambda i=i: accepted.append(f"fc-{i}"))
        await store.flush()
        assert len(accepted) == 2_000
        assert store.commits < 200  # grouped: far fewer transactions than inputs
        store.finish_call("fc-1", 0, b"result", lambda: None)
        await store.flush()
        return store

    store = asyncio.run(scenario())
    pending = list(store.pending_calls())
    assert len(pending) == 1_999
    done = store.call("fc-1")
    assert done is not None and done.result == b"result" and done.args is None
    store.close()
    reopened = Store(str(tmp_path / "shoal.db"))  # what a restart reads back
    assert len(list(reopened.pending_calls())) == 1_999
    reopened.close()


def test_a_pipe_hands_messages_over_in_order_and_closes_both_ends() -> None:
    async def scenario() -> tuple[list[object], list[object], list[str]]:
        got_by_server: list[object] = []
        got_by_client: list[object] = []
        lost: list[str] = []
        server_end: list[pipe.PipeEnd] = []

        def accept() -> pipe.PipeEnd:
            def answer(message: object) -> None:
                got_by_server.append(message)
                if isinstance(message, Request):  # answers within the sender's send
                    server_end[0].send(Reply(message.request_id, True, b""))

            end = pipe.PipeEnd(answer, lambda _: lost.append("server"), 0)
            server_end.append(end)
            return end

        url = pipe.listen("test-pipe", accept)
        try:
            with pytest.raises(OSError):
                pipe.listen("test-pipe", accept)  # one listener per name
            with pytest.raises(ConnectionRefusedError):
                pipe.dial(pipe.SCHEME + "nobody", pipe.PipeEnd(print, print, 0))
            client = pipe.PipeEnd(got_by_client.append, lambda _: lost.append("client"), 0)
            pipe.dial(url, client)
            sent = [CallCancel(f"c{i}") for i in range(3)] + [Request(7, "ping", b"")]
            for message in sent:
                client.send(message)
            client.abort()
            client.send(CallCancel("after"))  # a closed pipe takes nothing more
            await asyncio.sleep(0)  # the other end hears of it in the next loop turn
            return got_by_server, got_by_client, lost
        finally:
            pipe.unlisten(url)

    got_by_server, got_by_client, lost = asyncio.run(scenario())
    assert got_by_server == [*(CallCancel(f"c{i}") for i in range(3)), Request(7, "ping", b"")]
    assert got_by_client == [Reply(7, True, b"")]
    assert lost == ["client", "server"]
