"""Ray's fake multi-node provider (every "machine" a raylet on this one), whose nodes
count as set up as soon as they are launched.

Ray's own provider leaves a launched node "uninitialized" until a node updater has run
its setup over SSH; no such thing happens to a fake node, so either the updater fails
and the node is terminated as a failed launch, or (updaters off, as under KubeRay) the
node stays pending and is never retired as idle. The autoscaling cluster of
``benchmarks/cluster.py`` uses this one, as an external provider.
"""

from __future__ import annotations

from typing import Any

from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider
from ray.autoscaler.tags import STATUS_UP_TO_DATE, TAG_RAY_NODE_STATUS


class ReadyNodes(FakeMultiNodeProvider):  # type: ignore[misc]
    """Fake nodes, up to date from their launch."""

    def create_node_with_resources_and_labels(
        self,
        node_config: dict[str, Any],
        tags: dict[str, str],
        count: int,
        resources: dict[str, float],
        labels: dict[str, str],
    ) -> Any:
        ready = {**tags, TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE}
        return super().create_node_with_resources_and_labels(
            node_config, ready, count, resources, labels
        )
