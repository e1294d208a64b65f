"""Pure parts of the service: code bundles and the store's group commits."""

from __future__ import annotations

import asyncio
import io
import time
import zipfile
from pathlib import Path

import pytest

from shoal.exception import InvalidError
from shoal.protocol import bundle
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
