"""Kill the drainer at random points, rerun it from its last STATE, prove nothing was lost.

Each scenario seeds a fresh create/update/delete workload (tests.fault_workload)
into Redis, runs `tap-redis-stream | target-batched-postgres` as real
processes against real servers, SIGKILLs the tap or the target at a named
fault point (DRAINER_FAULT_POINT, see target_batched_postgres/faults.py) or at
a random moment, reruns from the last STATE the target printed (as Meltano
would) until a run completes, and then checks every guarantee of DESIGN.md:
final tables equal to the drainer's SQL in stream order, each entry written
or dead-lettered exactly once, no STATE ever past an entry not yet committed,
Kafka holding every published row, duplicates only of one source entry.

    python -m tests.fault_harness --kills 100     # the soak run (make soak)

tests/integration/test_faults.py runs the CI-sized version of the same code.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psycopg
import redis as redis_lib
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from psycopg import sql

from tests import fault_workload as fw
from tests.kv_workload import TABLES
from tests.servers import (
    Server,
    _wait_for_kafka,
    _wait_for_port,
    _wait_for_postgres,
    kafka_from_env_or_start,
    postgres_from_env_or_start,
    redis_from_env_or_start,
    start_kafka,
    start_postgres,
    start_redis,
)

BIN = Path(sys.executable).parent
TAP_BIN = BIN / "tap-redis-stream"
TARGET_BIN = BIN / "target-batched-postgres"
DEAD_LETTERS = "_dead_letters"
# Point -> highest pass to stop at. Small on purpose: each rerun resumes from the
# last STATE, so early kills still land all over the workload, and few runs
# complete before their kill comes.
TARGET_POINTS = {
    "before_kafka": 25,
    "after_kafka_ack": 25,
    "during_fallback": 10,
    "before_pg_commit": 3,
    "before_state": 4,
}
TAP_POINTS = {"between_reads": 5}
RUN_TIMEOUT_SECONDS = 180.0


@dataclass(frozen=True)
class Kill:
    """SIGKILL the tap or the target at a named fault point (n-th pass) or after a delay."""

    process: str  # "tap" | "target"
    point: str | None = None
    after: int = 1
    delay: float = 0.0

    def __str__(self) -> str:
        where = f"{self.point}#{self.after}" if self.point else f"t+{self.delay:.2f}s"
        return f"{self.process}@{where}"


def random_kill(rnd: random.Random) -> Kill:
    """A third at random moments, the rest at named points of the target or the tap."""
    roll = rnd.random()
    if roll < 0.33:
        # Start-up takes about a second; the work after it one to two.
        return Kill(rnd.choice(["tap", "target", "target"]), delay=rnd.uniform(0.9, 2.2))
    if roll < 0.43:
        point, most = rnd.choice(sorted(TAP_POINTS.items()))
        return Kill("tap", point, rnd.randint(1, most))
    point, most = rnd.choice(sorted(TARGET_POINTS.items()))
    return Kill("target", point, rnd.randint(1, most))


@dataclass
class Run:
    """One tap | target run: how it ended and every STATE the target printed."""

    kill: Kill | None
    killed: bool
    tap_rc: int | None
    target_rc: int | None
    states: list[tuple[dt.datetime, dict[str, Any]]]
    seconds: float
    logs: Path

    @property
    def clean(self) -> bool:
        return not self.killed and self.tap_rc == 0 and self.target_rc == 0

    def stderr(self, process: str) -> str:
        return (self.logs / f"{process}.log").read_text(errors="replace")


def _env_without_faults(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRAINER_FAULT_")}
    return {**env, **extra}


class Pipeline:
    """`tap-redis-stream | target-batched-postgres`, resuming from the last STATE printed."""

    def __init__(self, workdir: Path, tap_config: dict[str, Any], target_config: dict[str, Any]):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.tap_config = workdir / "tap.json"
        self.target_config = workdir / "target.json"
        self.tap_config.write_text(json.dumps(tap_config))
        self.target_config.write_text(json.dumps(target_config))
        self.state: dict[str, Any] | None = None
        self.runs: list[Run] = []

    def run(
        self,
        kill: Kill | None = None,
        *,
        during: Callable[[], None] | None = None,
        timeout: float = RUN_TIMEOUT_SECONDS,
    ) -> Run:
        """One run; `during` is called (in a thread) once the target printed two STATEs."""
        logs = self.workdir / f"run-{len(self.runs)}"
        logs.mkdir()
        tap_cmd = [str(TAP_BIN), "--config", str(self.tap_config)]
        if self.state is not None:
            (logs / "state.json").write_text(json.dumps(self.state))
            tap_cmd += ["--state", str(logs / "state.json")]
        env = {"tap": _env_without_faults({}), "target": _env_without_faults({})}
        if kill is not None and kill.point is not None:
            env[kill.process] |= {
                "DRAINER_FAULT_POINT": kill.point,
                "DRAINER_FAULT_AFTER": str(kill.after),
            }
        started = time.monotonic()
        states: list[tuple[dt.datetime, dict[str, Any]]] = []
        with (logs / "tap.log").open("wb") as tap_err, (logs / "target.log").open("wb") as tgt_err:
            tap = subprocess.Popen(tap_cmd, stdout=subprocess.PIPE, stderr=tap_err, env=env["tap"])
            target = subprocess.Popen(
                [str(TARGET_BIN), "--config", str(self.target_config)],
                stdin=tap.stdout,
                stdout=subprocess.PIPE,
                stderr=tgt_err,
                env=env["target"],
            )
            assert tap.stdout is not None
            assert target.stdout is not None
            tap.stdout.close()  # the tap alone holds the pipe: it sees the target die
            reader = threading.Thread(target=_read_states, args=(target.stdout, states))
            reader.start()
            victim = {"tap": tap, "target": target}[kill.process] if kill else None
            timer = None
            if kill is not None and kill.point is None and victim is not None:
                timer = threading.Timer(kill.delay, _sigkill, args=(victim,))
                timer.start()
            helper = None
            if during is not None:
                helper = threading.Thread(target=_after_states, args=(states, 2, during, target))
                helper.start()
            try:
                target.wait(timeout)
                tap.wait(timeout)
            except subprocess.TimeoutExpired:
                _sigkill(tap)
                _sigkill(target)
                raise RuntimeError(f"run {logs} did not end within {timeout} s") from None
            finally:
                if timer is not None:
                    timer.cancel()
                reader.join(30)
                if helper is not None:
                    helper.join(120)
        run = Run(
            kill,
            victim is not None and victim.returncode == -signal.SIGKILL,
            tap.returncode,
            target.returncode,
            states,
            time.monotonic() - started,
            logs,
        )
        if states:
            self.state = states[-1][1]
        self.runs.append(run)
        return run

    def run_to_completion(self, attempts: int = 3) -> Run:
        for _ in range(attempts):
            run = self.run()
            if run.clean:
                return run
        raise RuntimeError(
            f"no clean run in {attempts} attempts: {run.logs}\n{run.stderr('target')[-2000:]}"
            f"\n{run.stderr('tap')[-2000:]}"
        )


def _read_states(out: IO[bytes], states: list[tuple[dt.datetime, dict[str, Any]]]) -> None:
    for line in out:
        seen = dt.datetime.now(dt.UTC)
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict) and isinstance(value.get("stream_ids"), dict):
                states.append((seen, value))


def _after_states(
    states: list[Any], count: int, action: Callable[[], None], target: subprocess.Popen[bytes]
) -> None:
    """Wait until `count` STATEs arrived (or the target ended), then act."""
    while len(states) < count and target.poll() is None:
        time.sleep(0.02)
    action()


def _sigkill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)


# -- servers ----------------------------------------------------------------------


@dataclass
class Servers:
    postgres: str
    redis: str
    kafka: str


def restart(server: Server, sig: int = signal.SIGKILL, down_seconds: float = 0.0) -> None:
    """Stop a server we started with `sig`, then start the same command on the same port.

    PostgreSQL keeps its data folder (an immediate shutdown is a crash its WAL
    recovers from); Redis keeps what its append-only file holds; Tansu, memory
    only, comes back empty.
    """
    if server.external or server.proc is None or server.workdir is None:
        raise RuntimeError(f"cannot restart external {server.name}")
    argv = [str(a) for a in server.proc.args]  # type: ignore[union-attr]
    server.proc.send_signal(sig)
    server.proc.wait(timeout=30)
    time.sleep(down_seconds)
    log = server.workdir / f"{server.name}-restart.log"
    with log.open("ab") as out:
        server.proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=server.workdir
        )
    _wait_for_port(server.port, server.proc, server.name, log)
    if server.name == "postgres":
        _wait_for_postgres(server.url, server.proc, log)
    elif server.name == "kafka":
        _wait_for_kafka(server.url, server.proc, log)


def read_topics(
    bootstrap: str, topics: Sequence[str], *, quiet_seconds: float = 1.5, timeout: float = 90.0
) -> list[fw.KafkaMessage]:
    """Every message of the topics, from the beginning.

    Read until every partition passed its high watermark and nothing new came
    for `quiet_seconds`: Tansu 0.6 reports a high watermark that can lag
    behind the last record of a multi-record batch, so it is only a floor.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"fault-harness-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        metadata = consumer.list_topics(timeout=15)
        floors: dict[tuple[str, int], int] = {}
        for topic in topics:
            if topic in metadata.topics:
                for partition in metadata.topics[topic].partitions:
                    high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 15)[1]
                    floors[(topic, partition)] = high
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in floors])
        floors = {place: high for place, high in floors.items() if high > 0}
        messages: list[fw.KafkaMessage] = []
        deadline = time.monotonic() + timeout
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None or msg.error() is not None:
                if not floors and time.monotonic() - last_new >= quiet_seconds:
                    return messages
                continue
            last_new = time.monotonic()
            raw: Any = msg.headers() or []
            headers = {str(k): bytes(v) for k, v in raw if v is not None}
            value: Any = msg.value() or b""
            messages.append(fw.KafkaMessage(str(msg.topic()), bytes(value), headers))
            place = (str(msg.topic()), int(msg.partition() or 0))
            if place in floors and (msg.offset() or 0) + 1 >= floors[place]:
                del floors[place]
        raise RuntimeError(
            f"Kafka partitions not read to their end in {timeout} s: {sorted(floors)}"
        )
    finally:
        consumer.close()


# -- scenarios --------------------------------------------------------------------


@dataclass
class Scenario:
    """One workload in fresh names, a pipeline over it, and the checks."""

    servers: Servers
    workdir: Path
    seed: int
    entries: int = 500
    insert_batch_size: int = 25
    read_count: int = 50
    kafka_timeout_seconds: float = 5.0
    max_attempts: int = 4
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    workload: list[fw.Entry] = field(default_factory=list)

    @property
    def schema(self) -> str:
        return f"fh_{self.tag}"

    @property
    def reference(self) -> str:
        return f"fh_{self.tag}_ref"

    @property
    def keys(self) -> list[str]:
        return [f"fh-{self.tag}{{shard-{i}}}" for i in range(3)]

    @property
    def failed_stream(self) -> str:
        return f"fh-{self.tag}-failed"

    @property
    def topics(self) -> list[str]:
        return [f"fh-{self.tag}-{t.name}" for t in TABLES]

    def tap_config(self) -> dict[str, Any]:
        return {
            "redis_url": self.servers.redis,
            "stream_keys": self.keys,
            "read_count": self.read_count,
            "on_parse_error": "dead_letter",
            "failed_stream": self.failed_stream,
        }

    def target_config(self) -> dict[str, Any]:
        return {
            "database_url": self.servers.postgres,
            "default_target_schema": self.schema,
            "insert_batch_size": self.insert_batch_size,
            "kafka_enabled": True,
            "kafka_bootstrap_servers": self.servers.kafka,
            "kafka_topic_template": f"fh-{self.tag}-{{table}}",
            "kafka_delivery_timeout_seconds": self.kafka_timeout_seconds,
            "max_attempts": self.max_attempts,
            "retry_backoff_seconds": 0.2,
        }

    def prepare(self) -> None:
        """Schemas, audited tables, the reference, and the entries in Redis."""
        self.workload = fw.build(self.entries, seed=self.seed, reference_schema=self.reference)
        with psycopg.connect(self.servers.postgres, autocommit=True) as conn:
            for name in (self.schema, self.reference):
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
            fw.create_tables(conn, self.schema, audited=True, dead_letter_table=DEAD_LETTERS)
            fw.create_tables(conn, self.reference, audited=False)
            fw.apply_reference(conn, self.reference, self.workload)
        key_of = {t.name: self.keys[i % len(self.keys)] for i, t in enumerate(TABLES)}
        client = redis_lib.Redis.from_url(self.servers.redis)
        try:
            pipe = client.pipeline(transaction=False)
            for entry in self.workload:
                entry.key = key_of.get(entry.table or "", self.keys[0])
                pipe.xadd(entry.key, {"command": entry.payload})
            for entry, entry_id in zip(self.workload, pipe.execute(), strict=True):
                entry.entry_id = entry_id.decode()
        finally:
            client.close()

    def pipeline(self, name: str = "pipeline") -> Pipeline:
        return Pipeline(
            self.workdir / f"{name}-{self.tag}", self.tap_config(), self.target_config()
        )

    def verify(
        self,
        states: Sequence[tuple[dt.datetime, Mapping[str, Any]]],
        *,
        kafka_expected: Sequence[fw.Entry] | None = None,
    ) -> fw.Verdict:
        client = redis_lib.Redis.from_url(self.servers.redis)
        try:
            moved: Any = client.xrange(self.failed_stream)
        finally:
            client.close()
        failed = [
            (f[b"source_stream"].decode(), f[b"source_entry_id"].decode(), int(i.split(b"-")[0]))
            for i, f in moved
        ]
        with psycopg.connect(self.servers.postgres, autocommit=True) as conn:
            landed = fw.read_landed(conn, self.schema, self.reference, failed, DEAD_LETTERS)
        verdict = fw.Verdict()
        fw.check_tables(self.workload, landed, verdict)
        fw.check_states(
            self.workload, landed, [(t, s.get("stream_ids") or {}) for t, s in states], verdict
        )
        messages = read_topics(self.servers.kafka, self.topics)
        fw.check_kafka(self.workload, messages, verdict, expected=kafka_expected)
        return verdict

    def cleanup(self) -> None:
        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(self.servers.postgres, autocommit=True, connect_timeout=10) as conn,
        ):
            for name in (self.schema, self.reference):
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
                )
        with contextlib.suppress(redis_lib.RedisError):
            client = redis_lib.Redis.from_url(self.servers.redis)
            client.delete(*self.keys, self.failed_stream)
            client.close()


@dataclass
class Outcome:
    name: str
    kills: list[Kill]
    runs: list[Run]
    verdict: fw.Verdict
    seconds: float

    def summary(self) -> str:
        v = self.verdict
        status = "ok" if not v.problems else f"{len(v.problems)} PROBLEM(S)"
        return (
            f"{self.name}: {len(self.kills)} kill(s) in {len(self.runs)} run(s), "
            f"{self.seconds:.1f} s; lost {v.rows_lost}, duplicated {v.rows_duplicated}, "
            f"dead-letter dups {v.dead_letter_duplicates}, Kafka {v.kafka_messages} msgs "
            f"({v.kafka_duplicates} dups), {v.states_checked} STATEs checked: {status}"
        )


def all_states(runs: Sequence[Run]) -> list[tuple[dt.datetime, dict[str, Any]]]:
    return [state for run in runs for state in run.states]


def kill_chain(scenario: Scenario, draw: Callable[[], Kill], kills: int) -> Outcome:
    """Up to `kills` killed runs in a row (kills from `draw`), each resuming from the
    last STATE, then runs to completion."""
    started = time.monotonic()
    scenario.prepare()
    pipeline = scenario.pipeline()
    done: list[Kill] = []
    try:
        for _ in range(kills):
            kill = draw()
            run = pipeline.run(kill)
            if run.killed:
                done.append(kill)
                continue
            if not run.clean:
                raise RuntimeError(f"run failed without being killed ({kill}): {run.logs}")
            break  # completed before the kill came: nothing left to kill
        else:
            pipeline.run_to_completion()
        verdict = scenario.verify(all_states(pipeline.runs))
    finally:
        scenario.cleanup()
    return Outcome(
        f"kills[{scenario.tag}]", done, pipeline.runs, verdict, time.monotonic() - started
    )


def server_failure(scenario: Scenario, server: Server, how: str) -> Outcome:
    """Crash one (dedicated) server mid-run, bring it back, rerun to completion, check.

    `how`: `postgres` (immediate shutdown, then restart: the target retries),
    `redis` (SIGKILL, then restart from its append-only file: a bounded tap
    fails and the rerun completes), `kafka` (SIGKILL; the target fails once
    its delivery attempts run out; the broker restarts empty and the rerun
    publishes everything after the last STATE).
    """
    started = time.monotonic()
    scenario.prepare()
    pipeline = scenario.pipeline(f"{how}-failure")
    actions: dict[str, Callable[[], None]] = {
        "kafka": server.kill,
        "postgres": lambda: restart(server, signal.SIGQUIT, 0.5),
        "redis": lambda: restart(server, signal.SIGKILL, 0.5),
    }
    try:
        first = pipeline.run(during=actions[how])
        if how == "kafka":
            if first.target_rc == 0:
                raise RuntimeError(f"the target did not fail with its broker gone: {first.logs}")
            if "Kafka delivery failed" not in first.stderr("target"):
                raise RuntimeError(f"the target's failure does not name Kafka: {first.logs}")
            restart(server, signal.SIGKILL)
        elif not _noticed(first, how):
            raise RuntimeError(f"the {how} crash went unnoticed (too late?): {first.logs}")
        if not first.clean:
            pipeline.run_to_completion()
        expected = None
        if how == "kafka":  # the old broker's messages died with it (memory only)
            last = first.states[-1][1]["stream_ids"] if first.states else {}
            expected = [e for e in scenario.workload if e.id_tuple > _bookmark(last, e.key)]
        verdict = scenario.verify(all_states(pipeline.runs), kafka_expected=expected)
    finally:
        scenario.cleanup()
    return Outcome(
        f"{how}-failure[{scenario.tag}]", [], pipeline.runs, verdict, time.monotonic() - started
    )


def _noticed(run: Run, how: str) -> bool:
    """The crash hit the run: the process talking to the server failed or retried."""
    if how == "postgres":
        return run.target_rc != 0 or "failed (attempt" in run.stderr("target")
    return run.tap_rc != 0 or "unavailable" in run.stderr("tap")


def _bookmark(bookmarks: Mapping[str, str], key: str) -> tuple[int, int]:
    ms, _, seq = bookmarks.get(key, "0-0").partition("-")
    return (int(ms), int(seq or 0))


def soak(
    servers: Servers,
    workdir: Path,
    *,
    kills: int,
    seed: int,
    entries: int = 500,
    kills_per_scenario: int = 6,
    report: Callable[[str], None] = print,
) -> list[Outcome]:
    """Kill chains over fresh workloads until `kills` processes were killed."""
    rnd = random.Random(seed)
    outcomes: list[Outcome] = []
    total = 0
    while total < kills:
        scenario = Scenario(
            servers,
            workdir,
            seed=rnd.randrange(1_000_000),
            entries=entries,
            insert_batch_size=rnd.choice([7, 25, 100]),
            read_count=rnd.choice([20, 50, 200]),
        )
        outcome = kill_chain(
            scenario, lambda: random_kill(rnd), min(kills_per_scenario, kills - total)
        )
        total += len(outcome.kills)
        outcomes.append(outcome)
        report(f"{outcome.summary()} [{', '.join(map(str, outcome.kills))}]")
    return outcomes


def dedicated_server(how: str) -> Server:
    """A server of the scenario's own, which it may crash: durable PostgreSQL, Redis with AOF."""
    if how == "postgres":
        return start_postgres(durable=True)
    if how == "redis":
        return start_redis(extra_args=["--appendonly", "yes", "--appendfsync", "always"])
    return start_kafka()


def run_server_failure(servers: Servers, workdir: Path, how: str, *, seed: int) -> Outcome:
    """`server_failure` against a dedicated server started (and stopped) here."""
    server = dedicated_server(how)
    try:
        mine = Servers(
            postgres=server.url if how == "postgres" else servers.postgres,
            redis=server.url if how == "redis" else servers.redis,
            kafka=server.url if how == "kafka" else servers.kafka,
        )
        scenario = Scenario(
            mine, workdir, seed=seed, entries=400, read_count=20, insert_batch_size=10
        )
        if how == "kafka":  # fail fast once the broker is gone
            scenario.kafka_timeout_seconds, scenario.max_attempts = 2.0, 2
        if how == "postgres":  # ride out the restart
            scenario.max_attempts = 8
        return server_failure(scenario, server, how)
    finally:
        server.stop()


# -- Meltano ------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def meltano_bin() -> Path:
    return Path(os.environ.get("MELTANO_BIN", ROOT / ".venv-meltano" / "bin" / "meltano"))


def prepare_meltano_project(path: Path) -> Path:
    """A Meltano project with this repository's two plugins (`meltano install`ed)."""
    import yaml

    spec = yaml.safe_load((ROOT / "meltano.yml").read_text())
    for plugins in spec["plugins"].values():
        for plugin in plugins:
            plugin["pip_url"] = f"-e {ROOT}"
    path.mkdir(parents=True, exist_ok=True)
    (path / "meltano.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    _meltano(path, {}, "install", check=True)
    return path


def _meltano(
    project: Path, env: Mapping[str, str], *args: str, check: bool = False
) -> subprocess.CompletedProcess[str]:
    binary = meltano_bin()
    result = subprocess.run(
        [str(binary), *args],
        cwd=project,
        env={
            **_env_without_faults(env),
            "PATH": f"{binary.parent}:{os.environ['PATH']}",
            "MELTANO_DATABASE_URI": f"sqlite:///{project}/.meltano/meltano.db",
        },
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"meltano {' '.join(args)} failed: {result.stderr[-3000:]}")
    return result


def meltano_env(scenario: Scenario) -> dict[str, str]:
    """The scenario's settings as Meltano variables.

    Fractional settings are left at their defaults: Meltano 4.4 turns a
    `decimal` setting read from the environment into a Decimal it then cannot
    write to the plugin's config (TypeError: not JSON serializable).
    """
    tap = scenario.tap_config()
    target = scenario.target_config()
    env = {f"TAP_REDIS_STREAM_{k.upper()}": v for k, v in tap.items()}
    env |= {f"TARGET_BATCHED_POSTGRES_{k.upper()}": v for k, v in target.items()}
    return {
        k: v if isinstance(v, str) else json.dumps(v)
        for k, v in env.items()
        if not isinstance(v, float)
    }


def meltano_state(project: Path, suffix: str) -> dict[str, Any] | None:
    listed = _meltano(project, {}, "state", "list", check=True).stdout.split()
    state_id = next((s for s in listed if s.endswith(f":{suffix}")), None)
    if state_id is None:
        return None
    got = json.loads(_meltano(project, {}, "state", "get", state_id, check=True).stdout)
    return dict(got.get("singer_state") or got)


def meltano_kill(project: Path, scenario: Scenario, kill: Kill) -> Outcome:
    """`meltano run` killed at a fault point, then `meltano run` again: resumes from its state."""
    started = time.monotonic()
    scenario.prepare()
    job = ("run", "--state-id-suffix", scenario.tag, "tap-redis-stream", "target-batched-postgres")
    env = meltano_env(scenario)
    states: list[tuple[dt.datetime, dict[str, Any]]] = []
    try:
        faulty = {"DRAINER_FAULT_POINT": str(kill.point), "DRAINER_FAULT_AFTER": str(kill.after)}
        first = _meltano(project, env | faulty, *job)
        if first.returncode == 0:
            raise RuntimeError(f"meltano run was not killed at {kill}: {first.stderr[-2000:]}")
        if f"fault point {kill.point!r} reached" not in first.stderr:
            raise RuntimeError(f"meltano run failed, not at {kill}: {first.stderr[-3000:]}")
        saved = meltano_state(project, scenario.tag)
        if saved is not None:
            states.append((dt.datetime.now(dt.UTC), saved))
        second = _meltano(project, env, *job)
        if second.returncode != 0:
            raise RuntimeError(f"meltano rerun failed: {second.stderr[-3000:]}")
        final = meltano_state(project, scenario.tag)
        states.append((dt.datetime.now(dt.UTC), final or {}))
        verdict = scenario.verify(states)
        if saved is None or final is None or final == saved:
            verdict.add(f"Meltano state did not advance as expected: {saved} -> {final}")
    finally:
        scenario.cleanup()
    return Outcome(f"meltano[{scenario.tag}]", [kill], [], verdict, time.monotonic() - started)


# -- the soak command ---------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fault_harness",
        description="Kill the drainer at random points and check nothing was lost or duplicated.",
    )
    parser.add_argument("--kills", type=int, default=100, help="killed runs to reach (default 100)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--entries", type=int, default=500, help="entries per workload")
    parser.add_argument("--kills-per-scenario", type=int, default=6)
    parser.add_argument(
        "--no-server-failures", action="store_true", help="skip the PostgreSQL/Redis/Kafka crashes"
    )
    parser.add_argument("--no-meltano", action="store_true", help="skip the `meltano run` scenario")
    parser.add_argument("--keep", type=Path, help="keep every run's logs in this folder")
    args = parser.parse_args(argv)
    started = time.monotonic()
    session = [postgres_from_env_or_start(), redis_from_env_or_start(), kafka_from_env_or_start()]
    servers = Servers(*(s.url for s in session))
    outcomes: list[Outcome] = []
    try:
        with tempfile.TemporaryDirectory(prefix="fault-harness-") as tmp:
            work = args.keep or Path(tmp)
            outcomes += soak(
                servers,
                work,
                kills=args.kills,
                seed=args.seed,
                entries=args.entries,
                kills_per_scenario=args.kills_per_scenario,
            )
            if not args.no_server_failures:
                for how in ("postgres", "redis", "kafka"):
                    outcomes.append(run_server_failure(servers, work, how, seed=args.seed))
                    print(outcomes[-1].summary())
            if not args.no_meltano and meltano_bin().exists():
                project = prepare_meltano_project(work / "meltano")
                scenario = Scenario(servers, work, seed=args.seed + 1, entries=300)
                outcomes.append(
                    meltano_kill(project, scenario, Kill("target", "after_kafka_ack", 40))
                )
                print(outcomes[-1].summary())
    finally:
        for server in session:
            server.stop()
    problems = [p for o in outcomes for p in o.verdict.problems]
    for problem in problems:
        print("PROBLEM:", problem)
    kills = sum(len(o.kills) for o in outcomes)
    print(
        f"TOTAL: {kills} kills in {sum(len(o.runs) for o in outcomes)} runs over "
        f"{len(outcomes)} scenarios; rows lost {sum(o.verdict.rows_lost for o in outcomes)}, "
        f"rows duplicated in PK tables {sum(o.verdict.rows_duplicated for o in outcomes)}, "
        f"dead-letter duplicates {sum(o.verdict.dead_letter_duplicates for o in outcomes)}, "
        f"Kafka messages {sum(o.verdict.kafka_messages for o in outcomes)} "
        f"(duplicates {sum(o.verdict.kafka_duplicates for o in outcomes)}), "
        f"STATEs checked {sum(o.verdict.states_checked for o in outcomes)}, "
        f"runtime {time.monotonic() - started:.0f} s"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
