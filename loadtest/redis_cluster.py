"""A real local Redis Cluster from the installed redis-server: for the suite and the drills.

    cluster = LocalCluster(Path(tmp)).start()     # 3 masters + 3 replicas on free ports
    cluster.url                                   # redis://127.0.0.1:<a master>/0
    cluster.kill(port); cluster.wait_ok()         # SIGKILL a master; its replica takes over
    cluster.reshard(slots=20)                     # redis-cli --cluster reshard, under load
    cluster.stop()

Each node runs with `--cluster-enabled yes` on a loopback port and an explicit bus port (both
free), `cluster-node-timeout` of 1 s (a failover takes about two), and
`cluster-require-full-coverage no`, so a master that fails takes down its own slots only. The
cluster is created with `redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes`
and waited on until every node says `cluster_state:ok` and every replica has finished its
initial sync. Processes are stopped by pid, every
wait has a deadline. Used by tests/service/conftest.py and loadtest/chaos_cluster.py.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

LOOPBACK = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is required (make redis)")
    return path


@dataclass
class Node:
    port: int
    bus_port: int
    process: subprocess.Popen[bytes] | None = None

    def client(self, timeout: float = 1.0) -> redis.Redis:
        return redis.Redis(
            host=LOOPBACK, port=self.port, socket_timeout=timeout, socket_connect_timeout=timeout
        )


@dataclass
class LocalCluster:
    directory: Path
    masters: int = 3
    replicas: int = 1
    node_timeout_ms: int = 1_000
    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.nodes[0].port}/0"

    def _launch(self, node: Node) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / f"node-{node.port}.log").open("ab")
        node.process = subprocess.Popen(  # noqa: S603 (argv built here, no shell)
            [
                _binary("redis-server"), "--port", str(node.port), "--bind", LOOPBACK,
                "--cluster-enabled", "yes", "--cluster-port", str(node.bus_port),
                "--cluster-config-file", str(self.directory / f"nodes-{node.port}.conf"),
                "--cluster-node-timeout", str(self.node_timeout_ms),
                "--cluster-require-full-coverage", "no",
                # a replica may always be promoted, however long ago it last heard the master:
                # one that lagged past the default validity window on a loaded box never would
                "--cluster-replica-validity-factor", "0",
                "--dir", str(self.directory), "--dbfilename", f"dump-{node.port}.rdb",
                "--save", "", "--appendonly", "no", "--logfile", "",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        self._until(lambda: self._pings(node), 10, f"node {node.port} never answered")

    @staticmethod
    def _pings(node: Node) -> bool:
        try:
            with node.client(0.2) as client:
                return bool(client.ping())
        except (redis.RedisError, OSError):
            return False

    @staticmethod
    def _until(condition: object, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while not condition():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise RuntimeError(what)
            time.sleep(0.05)

    def start(self) -> LocalCluster:
        count = self.masters * (1 + self.replicas)
        ports: set[int] = set()
        while len(ports) < 2 * count:
            ports.add(_free_port())
        pairs = sorted(ports)
        self.nodes = [Node(pairs[2 * i], pairs[2 * i + 1]) for i in range(count)]
        try:
            for node in self.nodes:
                self._launch(node)
            addresses = [f"{LOOPBACK}:{node.port}" for node in self.nodes]
            subprocess.run(  # noqa: S603 (argv built here, no shell)
                [_binary("redis-cli"), "--cluster", "create", *addresses,
                 "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
            self.wait_ok()
            self.wait_replicated()
        except BaseException:
            self.stop()
            raise
        return self

    def _replicated(self, node: Node) -> bool:
        try:
            with node.client(0.3) as client:
                info = client.info("replication")
        except (redis.RedisError, OSError):
            return False
        if info.get("role") == "slave":
            return bool(
                info.get("master_link_status") == "up" and not info.get("master_sync_in_progress")
            )
        return int(info.get("connected_slaves", 0)) >= self.replicas

    def wait_replicated(self, seconds: float = 30) -> float:
        """Until every replica's link to its master is up with the initial sync done: a write
        acknowledged before that exists on the master only, and a failover drill that kills
        the master right after creation would count it lost against the service (one suite
        run on a loaded box lost 24 of 205 accepted events, early ones: most likely this).
        The time taken."""
        return self._wait_all(self._replicated, seconds, "a replica never finished its sync")

    def _state_ok(self, node: Node) -> bool:
        try:
            with node.client(0.3) as client:
                info = client.cluster("info")
                if info.get("cluster_state") != "ok" or int(info["cluster_slots_ok"]) != 16_384:
                    return False
                # every slot's master is alive and known as such by this node
                return all("fail" not in n["flags"] for n in client.cluster("nodes").values()
                           if "master" in n["flags"] and n["slots"])  # fmt: skip
        except (redis.RedisError, OSError, KeyError, ValueError):
            return False

    def alive(self) -> list[Node]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def _wait_all(self, check: Callable[[Node], bool], seconds: float, what: str) -> float:
        started = time.monotonic()
        self._until(lambda: all(check(node) for node in self.alive()), seconds, what)
        return time.monotonic() - started

    def wait_ok(self, seconds: float = 30) -> float:
        """Until every live node reports cluster_state:ok with all slots served; the time taken."""
        return self._wait_all(self._state_ok, seconds, "the cluster never reached cluster_state:ok")

    def wait_takeover(self, port: int, seconds: float = 30) -> float:
        """Until the killed master `port` is flagged failed, its slots served by a promoted
        replica, and every live node says cluster_state:ok; the time taken."""
        started = time.monotonic()

        def taken_over() -> bool:
            try:
                with self.alive()[0].client(0.3) as client:
                    nodes = client.cluster("nodes")
            except (redis.RedisError, OSError):
                return False
            dead = [i for a, i in nodes.items() if a.split("@")[0].endswith(f":{port}")]
            return bool(dead) and "fail" in dead[0]["flags"].split(",") and not dead[0]["slots"]

        self._until(lambda: taken_over() and all(self._state_ok(n) for n in self.alive()),
                    seconds, f"no replica took over from :{port}")  # fmt: skip
        return time.monotonic() - started

    def master_ports(self) -> list[int]:
        """Ports of the live masters that serve slots, as the cluster sees them now."""
        with self.alive()[0].client() as client:
            nodes = client.cluster("nodes")
        return sorted(
            int(address.split("@")[0].rsplit(":", 1)[1])
            for address, info in nodes.items()
            if "master" in info["flags"] and "fail" not in info["flags"] and info["slots"]
        )

    def node(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def node_id(self, port: int) -> str:
        with self.node(port).client() as client:
            return str(client.execute_command("CLUSTER", "MYID").decode())

    def kill(self, port: int) -> None:
        """SIGKILL one node, by its pid."""
        node = self.node(port)
        if node.process is not None and node.process.poll() is None:
            node.process.send_signal(signal.SIGKILL)
            node.process.wait(timeout=10)
        node.process = None

    def restart(self, port: int) -> None:
        """Start a killed node again on its ports (it rejoins as a replica once failed over)."""
        self._launch(self.node(port))

    def reshard(self, slots: int, *, source: int | None = None, target: int | None = None) -> None:
        """Move `slots` slots from one master to another with redis-cli --cluster reshard."""
        masters = self.master_ports()
        source = masters[0] if source is None else source
        target = masters[-1] if target is None else target
        subprocess.run(  # noqa: S603 (argv built here, no shell)
            [_binary("redis-cli"), "--cluster", "reshard", f"{LOOPBACK}:{source}",
             "--cluster-from", self.node_id(source), "--cluster-to", self.node_id(target),
             "--cluster-slots", str(slots), "--cluster-yes", "--cluster-pipeline", "10"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip

    def flushall(self) -> None:
        for port in self.master_ports():
            with self.node(port).client() as client:
                client.flushall()
                client.script_flush()

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.process.wait(timeout=10)
                if node.process.poll() is None:
                    node.process.kill()
                    node.process.wait(timeout=10)
            node.process = None
