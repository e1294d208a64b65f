"""Resources a container reserves, and a machine's room for them (pure logic)."""

from __future__ import annotations

import pytest

from shoal.exception import InvalidError
from shoal.spec.resources import Gpu, Resources, Room


def test_modal_spellings_of_cpu_memory_and_gpu() -> None:
    assert Resources.coerce() == Resources(cpu=0.125, memory=128)
    both = Resources.coerce(cpu=(1, 2.5), memory=(512, 1024), gpu="h100:2")
    assert (both.cpu, both.cpu_limit, both.memory, both.memory_limit) == (1.0, 2.5, 512, 1024)
    assert (both.gpu_type, both.gpu_count) == ("H100", 2)
    assert Resources.coerce(gpu="any").gpu_type == "any"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cpu": 0}, "cpu"),
        ({"cpu": float("nan")}, "cpu"),
        ({"cpu": (2, 1)}, "limit 1 is below the request 2"),
        ({"memory": 1.5}, "whole MiB"),
        ({"memory": -1}, "memory"),
        ({"memory": (1, 2, 3)}, "pair"),
        ({"gpu": "A100:0"}, "1..8"),
        ({"gpu": ""}, "GPU type"),
    ],
)
def test_bad_resources_are_refused_naming_the_value(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidError, match=message):
        Resources.coerce(**options)  # type: ignore[arg-type]


def test_room_holds_cores_memory_and_gpus_until_given_back() -> None:
    room = Room(2.0, 4096, (Gpu(0, "NVIDIA H100 80GB HBM3"), Gpu(1, "NVIDIA A100-SXM4-40GB")))
    one_core = Resources.coerce(cpu=1.0, memory=1000)
    first, second = room.take(one_core), room.take(one_core)
    assert first is not None and second is not None
    assert room.take(one_core) is None  # the cores are spoken for
    room.give_back(first)
    assert room.take(one_core) is not None
    gpu = Resources.coerce(cpu=0.1, memory=10, gpu="A100")
    room = Room(8.0, 4096, (Gpu(0, "NVIDIA H100 80GB HBM3"), Gpu(1, "NVIDIA A100-SXM4-40GB")))
    grant = room.take(gpu)
    assert grant is not None and grant.gpus == (1,)
    assert room.take(gpu) is None  # the only A100 is busy
    any_two = room.take(Resources.coerce(cpu=0.1, memory=10, gpu="any"))
    assert any_two is not None and any_two.gpus == (0,)


def test_a_function_that_cannot_fit_the_machine_is_refused_at_once() -> None:
    room = Room(2.0, 4096, (Gpu(0, "NVIDIA A10G"),))
    room.check(Resources.coerce(cpu=2, memory=4096, gpu="a10g"), "fits")
    with pytest.raises(InvalidError, match=r"asks for 2 H100 GPU.*has 0 that match"):
        room.check(Resources.coerce(gpu="H100:2"), "big")
    with pytest.raises(InvalidError, match="4 cores"):
        room.check(Resources.coerce(cpu=4), "wide")
