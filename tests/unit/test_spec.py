"""Options are validated where they are written, naming the value and the range."""

from __future__ import annotations

import pytest

import shoal
from shoal.exception import InvalidError
from shoal.spec.function import FunctionSpec, Retries, Scaling


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_inputs": 0}, "max_inputs=0"),
        ({"max_inputs": 4, "target_inputs": 5}, "target_inputs=5"),
        ({"min_containers": -1}, "min_containers=-1"),
        ({"max_containers": 0}, "max_containers=0"),
        ({"min_containers": 3, "max_containers": 2}, "max_containers=2"),
        ({"buffer_containers": -1}, "buffer_containers=-1"),
        ({"scaledown_window": 0}, "scaledown_window=0"),
        ({"max_inputs": True}, "max_inputs=True"),
    ],
)
def test_bad_scaling_values_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidError, match=message):
        Scaling(**kwargs)  # type: ignore[arg-type]


def test_target_defaults_to_max_inputs() -> None:
    assert Scaling(max_inputs=8).target == 8
    assert Scaling(max_inputs=8, target_inputs=6).target == 6


def test_retries() -> None:
    r = Retries(max_retries=3, initial_delay=1.0, backoff_coefficient=2.0, max_delay=3.0)
    assert [r.delay(n) for n in (1, 2, 3)] == [1.0, 2.0, 3.0]
    assert Retries.coerce(2) == Retries(max_retries=2, initial_delay=0.0, max_delay=0.0)
    assert Retries.coerce(None).max_retries == 0
    with pytest.raises(InvalidError, match="max_retries=11"):
        Retries(max_retries=11)
    with pytest.raises(InvalidError, match="retries="):
        Retries.coerce("3")  # type: ignore[arg-type]


def test_timeout_range() -> None:
    with pytest.raises(InvalidError, match="timeout=0"):
        FunctionSpec(name="f", timeout=0)


def test_app_function_rejects_conflicting_spellings() -> None:
    app = shoal.App()
    with pytest.raises(InvalidError, match="keep_warm"):
        app.function(min_containers=1, keep_warm=1)
    with pytest.raises(InvalidError, match="not both"):

        @app.function(allow_concurrent_inputs=2)
        @shoal.concurrent(max_inputs=3)
        def f() -> None: ...

    with pytest.raises(InvalidError, match=r"below @app\.function"):
        shoal.concurrent(max_inputs=2)(app.function(name="g")(_top_level))


def _top_level() -> None: ...


def test_concurrent_and_allow_concurrent_inputs_mean_the_same() -> None:
    app = shoal.App()

    @app.function(name="a", serialized=True)
    @shoal.concurrent(max_inputs=7, target_inputs=5)
    def a() -> None: ...

    b = app.function(allow_concurrent_inputs=7, name="b")(_top_level)
    assert a.spec.scaling.max_inputs == b.spec.scaling.max_inputs == 7
    assert a.spec.scaling.target == 5


def test_definitions_stored_before_the_spec_package_still_load() -> None:
    import pickle

    from shoal.spec.function import CodeRef, Definition, FunctionSpec, load_definitions

    code = CodeRef(
        module_kind="file", module_name="m", module_file="/x.py", sys_path=(), qualname="f"
    )
    stored = pickle.dumps([Definition("f", FunctionSpec(name="f"), code, {})], protocol=0)
    old = stored.replace(
        b"shoal.spec.function", b"shoal.control.spec"
    )  # as an older server kept it
    assert b"shoal.control.spec" in old
    (loaded,) = load_definitions(old)
    assert (loaded.name, loaded.spec, loaded.code) == ("f", FunctionSpec(name="f"), code)


def test_with_options_replaces_custom_resources_and_keeps_the_rest() -> None:
    from shoal.spec.function import with_options
    from shoal.spec.resources import Resources

    spec = FunctionSpec(name="f", resources=Resources.coerce(cpu=2, custom={"node_a": 1}))
    moved = with_options(spec, resources={"node_b": 1, "disk_ssd": 0.5})
    assert moved.resources.custom == (("disk_ssd", 0.5), ("node_b", 1.0))
    assert moved.resources.cpu == 2.0  # what was not given stays
    assert moved.name == "f[resources={'disk_ssd': 0.5, 'node_b': 1}]"
    assert with_options(spec, cpu=1).resources.custom == (("node_a", 1.0),)
    with pytest.raises(InvalidError, match="custom resource"):
        with_options(spec, resources={"CPU": 1})
