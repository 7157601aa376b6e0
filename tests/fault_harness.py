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
import random
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis as redis_lib
from psycopg import sql

from tests import fault_workload as fw
from tests.fault_pipeline import (
    Kill,
    Pipeline,
    Run,
    Servers,
    log_tail,
    meltano_bin,
    meltano_run,
    meltano_state,
    prepare_meltano_project,
    read_topics,
    restart,
)
from tests.kv_workload import TABLES
from tests.servers import (
    Server,
    kafka_from_env_or_start,
    postgres_from_env_or_start,
    redis_from_env_or_start,
    start_kafka,
    start_postgres,
    start_redis,
)

DEAD_LETTERS = "_dead_letters"
# Point -> highest pass to stop at. Small on purpose: each rerun resumes from the
# last STATE, so early kills still land all over the workload, and few runs
# complete before their kill comes.
TARGET_POINTS = {
    "before_kafka": 25,
    "after_kafka_ack": 25,
    "after_pg_send": 10,
    "during_fallback": 10,
    "before_pg_commit": 3,
    "before_state": 3,
}
TAP_POINTS = {"between_reads": 5}


def random_kill(rnd: random.Random) -> Kill:
    """A third at random moments, the rest at named points of the target or the tap."""
    roll = rnd.random()
    if roll < 0.33:
        # Start-up takes about a second; the work after it one to two, and the
        # tap, a pipe buffer ahead, is done well before the target.
        if rnd.random() < 0.3:
            return Kill("tap", delay=rnd.uniform(0.7, 1.3))
        return Kill("target", delay=rnd.uniform(0.9, 2.2))
    if roll < 0.43:
        point, most = rnd.choice(sorted(TAP_POINTS.items()))
        return Kill("tap", point, rnd.randint(1, most))
    point, most = rnd.choice(sorted(TARGET_POINTS.items()))
    return Kill("target", point, rnd.randint(1, most))


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
    # Small, so that batches back up and the target sends statements ahead
    # (libpq pipeline mode) with a few hundred entries; None: the default.
    max_batches_per_statement: int | None = None
    decode_workers: int = 0  # the tap's decode_workers setting
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
        } | ({"decode_workers": self.decode_workers} if self.decode_workers else {})

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
        } | (
            {"max_batches_per_statement": self.max_batches_per_statement}
            if self.max_batches_per_statement is not None
            else {}
        )

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
                raise RuntimeError(
                    f"run failed without being killed ({kill}): {run.logs}\n"
                    f"target: {log_tail(run.stderr('target'))}\ntap: {log_tail(run.stderr('tap'))}"
                )
            break  # completed before the kill came: nothing left to kill
        else:
            pipeline.run_to_completion()
        verdict = scenario.verify(all_states(pipeline.runs))
    finally:
        scenario.cleanup()
    workers = f", {scenario.decode_workers} decode workers" if scenario.decode_workers else ""
    return Outcome(
        f"kills[{scenario.tag}{workers}]", done, pipeline.runs, verdict, time.monotonic() - started
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
        seed = rnd.randrange(1_000_000)
        scenario = Scenario(
            servers,
            workdir,
            seed=seed,
            entries=entries,
            insert_batch_size=rnd.choice([7, 25, 100]),
            read_count=rnd.choice([20, 50, 200]),
            max_batches_per_statement=rnd.choice([None, 2]),
            # A third of the scenarios decode in two worker processes (from
            # the seed, so that the draws of every other setting stay as they were).
            decode_workers=2 if seed % 3 == 0 else 0,
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
        # The crash must find the tap still reading: its output must outgrow
        # what the pipe and the target's input buffer hold (1 MiB each), or
        # the tap is done before the target's second STATE.
        entries = 8000 if how == "redis" else 400
        scenario = Scenario(
            mine, workdir, seed=seed, entries=entries, read_count=20, insert_batch_size=10
        )
        if how == "kafka":  # fail fast once the broker is gone
            scenario.kafka_timeout_seconds, scenario.max_attempts = 2.0, 2
        if how == "postgres":  # ride out the restart
            scenario.max_attempts = 8
        return server_failure(scenario, server, how)
    finally:
        server.stop()


# -- Meltano ------------------------------------------------------------------------


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


def meltano_kill(project: Path, scenario: Scenario, kill: Kill) -> Outcome:
    """`meltano run` killed at a fault point, then `meltano run` again: resumes from its state."""
    started = time.monotonic()
    scenario.prepare()
    job = ("run", "--state-id-suffix", scenario.tag, "tap-redis-stream", "target-batched-postgres")
    env = meltano_env(scenario)
    states: list[tuple[dt.datetime, dict[str, Any]]] = []
    try:
        faulty = {"DRAINER_FAULT_POINT": str(kill.point), "DRAINER_FAULT_AFTER": str(kill.after)}
        first = meltano_run(project, env | faulty, *job)
        if first.returncode == 0:
            raise RuntimeError(f"meltano run was not killed at {kill}: {first.stderr[-2000:]}")
        if f"fault point {kill.point!r} reached" not in first.stderr:
            raise RuntimeError(f"meltano run failed, not at {kill}: {first.stderr[-3000:]}")
        saved = meltano_state(project, scenario.tag)
        if saved is not None:
            states.append((dt.datetime.now(dt.UTC), saved))
        second = meltano_run(project, env, *job)
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
                    meltano_kill(project, scenario, Kill("target", "after_kafka_ack", 8))
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
