"""The ledger of nodes and the budget on it: where containers go, and why they wait."""

from __future__ import annotations

import pytest

from shoal.control.budget import ContainerBudget
from shoal.control.placement import Ledger
from shoal.exception import InvalidError
from shoal.spec.resources import Machine, Resources

ONE_CORE = Resources(cpu=1.0, memory=128)
PINNED = Resources(cpu=1.0, memory=128, custom=(("node_b", 1.0),))
TWO_NODES = {"a": Machine(3.0, 4096), "b": Machine(3.0, 4096, custom=(("node_b", 1.0),))}


def test_containers_fill_the_first_node_then_the_next() -> None:
    ledger = Ledger(TWO_NODES)
    nodes = [grant.node for grant in (ledger.take(ONE_CORE) for _ in range(6)) if grant]
    assert nodes == ["a", "a", "a", "b", "b", "b"]
    assert ledger.take(ONE_CORE) is None
    assert ledger.why_not(ONE_CORE) == "every node that can hold 1 cores, 128 MiB is full"


def test_a_custom_resource_pins_containers_to_the_nodes_that_have_it() -> None:
    ledger = Ledger(TWO_NODES)
    first = ledger.take(PINNED)
    assert first is not None and first.node == "b" and first.custom == (("node_b", 1.0),)
    assert ledger.take(PINNED) is None  # b has one node_b, held
    ledger.give_back(first)
    again = ledger.take(PINNED)
    assert again is not None and again.node == "b"


def test_what_fits_no_node_is_refused_unless_nodes_may_join() -> None:
    missing = Resources(custom=(("gpu_island", 1.0),))
    with pytest.raises(InvalidError, match="gpu_island"):
        Ledger(TWO_NODES).check(missing, "f")
    elastic = Ledger(TWO_NODES, elastic=True)
    elastic.check(missing, "f")  # a node that has it may join
    assert elastic.take(missing) is None
    assert "no node can hold" in elastic.why_not(missing)
    assert elastic.set_nodes({**TWO_NODES, "c": Machine(1.0, 1024, custom=(("gpu_island", 1),))})
    grant = elastic.take(missing)
    assert grant is not None and grant.node == "c"


def test_a_node_that_leaves_takes_its_room_and_its_grants_with_it() -> None:
    ledger = Ledger(TWO_NODES)
    grants = [ledger.take(ONE_CORE) for _ in range(4)]
    assert not ledger.set_nodes({"b": TWO_NODES["b"]})  # a left, nothing joined
    for grant in grants:
        assert grant is not None
        ledger.give_back(grant)  # a's are forgotten with it; b's come back
    assert [ledger.take(ONE_CORE) is not None for _ in range(4)] == [True, True, True, False]


def test_the_budget_wakes_waiting_pools_when_a_node_joins_and_asks_for_room() -> None:
    asked: list[list[Resources]] = []
    budget = ContainerBudget(100, Ledger({}, elastic=True), asked.append)
    woken: list[str] = []
    pool = object()
    assert budget.take(pool, lambda: woken.append("pool"), ONE_CORE, wanted=3) is None
    assert asked[-1] == [ONE_CORE] * 3  # the autoscaler hears the whole shortfall
    assert budget.why(pool, ONE_CORE) == "there is no node yet"
    budget.set_nodes({"a": Machine(2.0, 4096)})
    assert woken == ["pool"]
    grant = budget.take(pool, lambda: None, ONE_CORE, wanted=3)
    assert grant is not None
    assert asked[-1] == [ONE_CORE]  # placed: held (its node is not retired), none waits
    assert budget.why(pool, ONE_CORE) == ""
    budget.give_back(grant)
    assert asked[-1] == []  # gone: the cluster needs nothing for it
