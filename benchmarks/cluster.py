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


class AutoscalingCluster:
    """A Ray cluster whose autoscaler adds and retires nodes on this machine (Ray's
    fake multi-node provider: each "machine" it launches is a raylet of its own).

    Unlike ``ray.cluster_utils.AutoscalingCluster``, which runs ``ray stop --force`` and
    so ends every Ray process of the machine, this one stops only what it started: its
    head runs in a process group of its own (the autoscaler, and the worker nodes it
    launches, are in it too), on ports and a directory of its own.
    """

    def __init__(
        self, root: str, head_cpus: int, node_types: dict[str, dict[str, Any]], idle_s: float
    ) -> None:
        self.root = root
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._head_cpus = head_cpus
        self._config = {
            "cluster_name": "shoal-autoscaling",
            "max_workers": sum(t.get("max_workers", 1) for t in node_types.values()),
            "idle_timeout_minutes": idle_s / 60,
            "upscaling_speed": 1.0,
            "provider": {
                "type": "external",
                "module": "benchmarks.fake_nodes.ReadyNodes",
                "gcs_address": self.address,
                # Nothing is set up on a fake node over SSH (as under KubeRay).
                "disable_node_updaters": True,
                "disable_launch_config_check": True,
            },
            "auth": {"ssh_user": "nobody"},
            "head_node_type": "ray.head.default",  # the fake provider's own name for it
            # The autoscaler reads these even where nothing is copied or run on a node.
            "file_mounts": {},
            "cluster_synced_files": [],
            "file_mounts_sync_continuously": False,
            "initialization_commands": [],
            "setup_commands": [],
            "head_setup_commands": [],
            "worker_setup_commands": [],
            "head_start_ray_commands": [],
            "worker_start_ray_commands": [],
            "available_node_types": {
                "ray.head.default": {
                    "resources": {"CPU": head_cpus},
                    "node_config": {},
                    "max_workers": 0,
                },
                **{
                    name: {
                        "min_workers": 0,
                        "max_workers": 1,
                        "node_config": {},
                        **shape,
                        # Each added node gets this much object store, not 30% of RAM.
                        "resources": {
                            "object_store_memory": 80 << 20,
                            **shape["resources"],
                        },
                    }
                    for name, shape in node_types.items()
                },
            },
        }
        self._group: int | None = None

    def start(self) -> AutoscalingCluster:
        import json
        import subprocess
        import sys
        from pathlib import Path

        Path(self.root).mkdir(parents=True, exist_ok=True)
        config = Path(self.root) / "autoscaling.json"
        config.write_text(json.dumps(self._config))
        ray = str(Path(sys.executable).parent / "ray")
        env = {
            **os.environ,
            **LOOPBACK_ENV,
            "RAY_FAKE_CLUSTER": "1",  # the fake provider runs only with it
            # The autoscaler imports the provider from this repository.
            "PYTHONPATH": os.pathsep.join(
                [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
            ),
            "AUTOSCALER_UPDATE_INTERVAL_S": "1",
        }
        command = [
            ray,
            "start",
            "--head",
            f"--port={self.port}",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={self._head_cpus}",
            f"--object-store-memory={80 << 20}",
            "--include-dashboard=false",
            f"--dashboard-port={_free_port()}",
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--ray-client-server-port={_free_port()}",
            f"--temp-dir={self.root}/ray",
            f"--autoscaling-config={config}",
        ]
        starter = subprocess.Popen(
            command,
            env=env,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._group = starter.pid
        output, _ = starter.communicate(timeout=120)
        if starter.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start failed:\n{output.decode(errors='replace')[-3000:]}")
        return self

    def stop(self) -> None:
        """End every process of this cluster: its group, and any process under its
        directory that left the group (Ray's workers start sessions of their own)."""
        import signal

        from benchmarks import faults

        if self._group is not None:
            try:
                os.killpg(self._group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        marker = self.root.encode()
        for pid, (_, cmdline) in faults.processes().items():
            if marker in cmdline:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
