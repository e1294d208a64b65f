"""Code inside a container calls other functions through its control plane."""

from __future__ import annotations

import os

import httpx

from apps import nested
from shoal.cli.serving import serving


def test_a_function_maps_and_calls_another_from_its_container() -> None:
    with nested.app.run():
        total, single, pid = nested.outer_sync.remote(10)
        assert nested.double.stats().containers_started >= 1
    assert (total, single) == (90, 20)
    assert pid != os.getpid()


def test_async_code_awaits_another_function() -> None:
    with nested.app.run():
        assert nested.outer_async.remote(20) == 41


def test_errors_of_nested_calls_keep_their_type() -> None:
    with nested.app.run():
        assert nested.outer_failing.remote() == "caught deep down"


def test_nested_generators_stream() -> None:
    with nested.app.run():
        assert nested.outer_generator.remote(4) == [0, 1, 2, 3]


def test_a_web_endpoint_awaits_another_function() -> None:
    with nested.app.run(), serving(nested.app) as served:
        assert served is not None
        reply = httpx.get(served.url_for("doubled"), params={"x": 21}, timeout=60)
    assert reply.json() == {"doubled": 42}


def test_the_call_graph_shows_the_inputs_a_call_started() -> None:
    from shoal.call_graph import InputStatus

    with nested.app.run():
        call = nested.outer_sync.spawn(4)
        assert call.get(timeout=60)[0] == 12
        (root,) = call.get_call_graph()
        assert (root.function_name, root.status) == ("outer_sync", InputStatus.SUCCESS)
        assert [child.function_name for child in root.children] == ["double"] * 5
        assert all(child.status is InputStatus.SUCCESS for child in root.children)
        assert all(not child.children for child in root.children)
        awaited = nested.outer_async.spawn(1)
        assert awaited.get(timeout=60) == 3
        (other,) = awaited.get_call_graph()
        assert [c.function_name for c in other.children] == ["double"]  # from an async input
