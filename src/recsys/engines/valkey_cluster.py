"""A Valkey Cluster on loopback from the same `valkey-server` binary: several masters,
each with its own slots, as a shop's Redis or Valkey Cluster would be, to run the stack
against (the tests do; `RECSYS_REDIS_CLUSTER=true` with the URL of any node).

Each node asks for the same password made for the start (on its standard input, as the
embedded single server does). The slots are split evenly and the nodes introduced to
each other with CLUSTER MEET and CLUSTER ADDSLOTSRANGE; the cluster is ready when every
node reports `cluster_state:ok`. No replicas: a stopped node's slots are unavailable
until it is back, which is what a test of a node's loss wants.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

from recsys.engines.process import (
    EngineStartError,
    ManagedProcess,
    free_port,
    listens_on,
    private_dir,
    spawn,
)
from recsys.engines.valkey import new_password, valkey_answers, valkey_binary

SLOTS = 16_384
# A node's cluster bus listens on its port + 10000.
BUS_OFFSET = 10_000


@dataclass
class ClusterNode:
    port: int
    process: ManagedProcess

    def url(self, password: str) -> str:
        return f"redis://:{password}@127.0.0.1:{self.port}/0"


@dataclass
class ValkeyCluster:
    """The running nodes and the password they share; `url` names the first node, from
    which a cluster client discovers the others."""

    password: str
    nodes: list[ClusterNode] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.nodes[0].url(self.password)

    def node_of(self, key: str) -> ClusterNode:
        """The node that serves key's slot now."""
        from redis.cluster import RedisCluster

        client = RedisCluster.from_url(self.url, socket_timeout=2)
        try:
            port = int(client.get_node_from_key(key).port)
        finally:
            client.close()
        return next(node for node in self.nodes if node.port == port)

    def stop(self) -> None:
        for node in self.nodes:
            node.process.stop()


def _cluster_ports(count: int) -> list[int]:
    """Ports free now whose bus ports (+10000) are free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port + BUS_OFFSET < 65_536 and port not in ports and _free(port + BUS_OFFSET):
            ports.append(port)
    return ports


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _start_node(work_dir: Path, port: int, password: str, timeout: float) -> ClusterNode:
    node_dir = private_dir(work_dir / str(port))
    argv = [
        str(valkey_binary()),
        "-",  # the password from standard input
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(node_dir),
        "--cluster-enabled", "yes",
        "--cluster-config-file", "nodes.conf",
        "--cluster-node-timeout", "2000",
        # Keys outside a stopped node's slots stay served: the test of a node's loss.
        "--cluster-require-full-coverage", "no",
        "--appendonly", "no",
        "--save", "",
        "--daemonize", "no",
        "--protected-mode", "yes",
    ]  # fmt: skip
    process = spawn(
        f"valkey-server (cluster node {port})",
        argv,
        log_path=node_dir / "valkey.log",
        private=True,
        stdin_data=f"requirepass {password}\nmasterauth {password}\n".encode(),
    )
    node = ClusterNode(port, process)
    url = node.url(password)
    process.wait_ready(lambda: listens_on(process.pid, port) and valkey_answers(url), timeout)
    return node


@contextlib.contextmanager
def _clients(cluster: ValkeyCluster) -> Iterator[list[redis.Redis]]:
    clients = [
        redis.Redis.from_url(node.url(cluster.password), socket_timeout=5) for node in cluster.nodes
    ]
    try:
        yield clients
    finally:
        for client in clients:
            client.close()


def start_valkey_cluster(
    work_dir: Path, *, masters: int = 3, timeout: float = 30.0
) -> ValkeyCluster:
    """Start `masters` nodes under work_dir, split the slots among them, and wait until
    the cluster answers; stops what it started if it fails."""
    if masters < 1:
        raise ValueError("a cluster needs at least one master")
    cluster = ValkeyCluster(new_password())
    work_dir = private_dir(work_dir.resolve())
    try:
        for port in _cluster_ports(masters):
            cluster.nodes.append(_start_node(work_dir, port, cluster.password, timeout))
        _form(cluster, timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _form(cluster: ValkeyCluster, timeout: float) -> None:
    per = -(-SLOTS // len(cluster.nodes))
    with _clients(cluster) as clients:
        first = cluster.nodes[0]
        for client in clients[1:]:
            client.execute_command("CLUSTER", "MEET", "127.0.0.1", first.port)
        for index, client in enumerate(clients):
            low, high = index * per, min(SLOTS, (index + 1) * per) - 1
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", low, high)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(_ready(client, len(clients)) for client in clients):
                return
            time.sleep(0.05)
    raise EngineStartError(f"the Valkey cluster did not form within {timeout:.0f} s")


def _ready(client: redis.Redis, nodes: int) -> bool:
    info = client.execute_command("CLUSTER", "INFO")
    text = info.decode() if isinstance(info, bytes) else str(info)
    fields = dict(line.split(":", 1) for line in text.split() if ":" in line)
    return fields.get("cluster_state") == "ok" and fields.get("cluster_known_nodes") == str(nodes)
