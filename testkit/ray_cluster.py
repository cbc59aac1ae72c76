"""A real Ray cluster on this machine for the Ray backend's tests and bench: a head node without
GPUs (where the daemon's bridge attaches as a driver) and worker nodes each declaring one GPU,
so that Ray schedules ``num_gpus=1`` tasks on them (the tasks run on the CPU here).

Every Ray process listens on 127.0.0.1 only. Ray otherwise takes the host's own address even
when told 127.0.0.1 (it "resolves" loopback to the node IP); ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
makes it keep the loopback address, and ``ray.cluster_utils.Cluster`` starts several nodes on
one host all the same. The daemon needs the same variable (``ENVIRONMENT``), so that its
bridge's driver also stays on loopback.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from typing import Any

ENVIRONMENT = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


class LocalCluster:
    """``gpu_nodes`` nodes with one declared GPU each, behind a head with none."""

    def __init__(self, gpu_nodes: int, port: int | None = None, cpus_per_node: int = 1) -> None:
        os.environ.update(ENVIRONMENT)  # read by Ray in this process and the nodes it starts
        from ray.cluster_utils import Cluster

        head: dict[str, Any] = {
            "num_cpus": 1, "num_gpus": 0, "node_ip_address": LOOPBACK, "include_dashboard": False,
            "ray_client_server_port": free_port(),
        }  # fmt: skip
        if port is not None:
            head["gcs_server_port"] = port
        self.cluster = Cluster(initialize_head=True, connect=False, head_node_args=head)
        self.client_port = head["ray_client_server_port"]
        self.nodes = [
            self.cluster.add_node(num_cpus=cpus_per_node, num_gpus=1, node_ip_address=LOOPBACK)
            for _ in range(gpu_nodes)
        ]
        self.cluster.wait_for_nodes()

    @property
    def address(self) -> str:
        """The GCS address (``127.0.0.1:PORT``): a driver on this machine attaches to it."""
        return str(self.cluster.address)

    def node_with_id(self, prefix: str) -> Any:
        for node in self.nodes:
            if str(node.node_id).startswith(prefix):
                return node
        raise LookupError(f"no node {prefix}")

    def kill(self, node: Any) -> None:
        """The node dies as a machine would: its raylet and workers killed, nothing graceful."""
        self.cluster.remove_node(node, allow_graceful=False)
        self.nodes.remove(node)

    def shutdown(self) -> None:
        self.cluster.shutdown()


@contextlib.contextmanager
def local_cluster(gpu_nodes: int, port: int | None = None) -> Iterator[LocalCluster]:
    cluster = LocalCluster(gpu_nodes, port)
    try:
        yield cluster
    finally:
        cluster.shutdown()
