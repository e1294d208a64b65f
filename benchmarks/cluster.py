"""A multi-node Ray cluster on this machine, for the cluster tests and benchmarks.

Every node is a raylet of its own (``ray.cluster_utils.Cluster``), each with the
resources it is given, all bound to 127.0.0.1: Ray otherwise advertises the
machine's own network address, and traffic of these runs stays on loopback.
"""

from __future__ import annotations

import os
from typing import Any, Final

#: What makes every Ray process of this machine use 127.0.0.1 (Ray's switch for
#: single-machine clusters); set in the environment before Ray starts or is joined.
LOOPBACK_ENV: Final = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def start_cluster(nodes: list[dict[str, Any]]) -> Any:
    """Start a cluster of ``nodes`` (each ``ray start``'s options: ``num_cpus``,
    ``resources``...), the first the head; return it once every node is up."""
    os.environ.update(LOOPBACK_ENV)
    from ray.cluster_utils import Cluster

    common = {
        "node_ip_address": "127.0.0.1",
        "include_dashboard": False,
        "object_store_memory": 80 << 20,
    }
    cluster = Cluster(initialize_head=True, head_node_args={**common, **nodes[0]})
    for node in nodes[1:]:
        cluster.add_node(**common, **node)
    cluster.wait_for_nodes()
    return cluster
