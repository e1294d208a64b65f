"""Code inside a container calls other functions through its control plane."""

from __future__ import annotations

import os

import httpx

from apps import nested
from shoal.gateway.server import serving


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
