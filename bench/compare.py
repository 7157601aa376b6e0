"""target-batched-postgres and tap-redis-stream side by side with their peers, in one run.

    make bench                       # or: .venv/bin/python -m bench.compare
    .venv/bin/python -m bench.compare --records 20000 --repeat 1 --rss-records 0   # quick look

Starts its own PostgreSQL (fsync and synchronous_commit ON), Redis and Tansu on
loopback, generates the workloads deterministically (bench/workloads.py), and
installs the peer targets into their own venvs under bench/.venvs on first use
(meltanolabs-target-postgres 0.8.1, pipelinewise-target-postgres 2.1.2).

Every row runs as its own process reading the same bytes, timed from start to
exit (interpreter start included, for every row alike) in a fresh schema; the
table shows the median of `--repeat` runs, its ratio to raw COPY, SQL
statements per 1,000 records (pg_stat_statements, every statement the row's
process ran) and the process's peak RSS. Our target and raw COPY write into a
pre-created W1 table (uuid key, jsonb, text[]: the drainer's case, tables
exist); the peers create their own tables from the SCHEMA. Where a ratio is
a goal the rows take turns, run by run: the tap (alone and with two decode
workers) and the raw XRANGE loop, our target (W1, Kafka off) and meltanolabs
target-postgres, and the `meltano run` of W3 without and with decode workers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg import sql

from bench.workloads import W1_DDL, w1_rows, w2_rows, write_singer_file
from tests import kv_workload
from tests.servers import Server, start_kafka, start_postgres, start_redis

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DATA = ROOT / "bench" / ".data"
VENVS = ROOT / "bench" / ".venvs"
MELTANO = Path(os.environ.get("MELTANO_BIN", ROOT / ".venv-meltano" / "bin" / "meltano"))
PEERS = {
    "meltanolabs": "meltanolabs-target-postgres==0.8.1",
    "pipelinewise": "pipelinewise-target-postgres==2.1.2",
}
W3_STREAM_BASE = "bench-kv-stream"
W3_SHARDS = 8
MELTANO_W3 = "meltano run tap-redis-stream target-batched-postgres"
EMPTY_RUN = "meltano run, empty stream: the fixed cost of a run"
TARGET_W3 = "target-batched-postgres alone, Kafka on, from the tap's output"
TAP_WORKERS_W3 = "tap-redis-stream alone, decode_workers=2"
INSTALLED_W3 = f"{MELTANO_W3}, plugins installed from the checkout (catalog cached)"
# A copy of this repository's Meltano project whose plugins are installed from
# the checkout rather than editable: Meltano then caches the tap's catalog
# (see Bench.installed_project).
INSTALLED = DATA / "meltano-installed"


@dataclass
class Run:
    seconds: float
    rss_mb: float
    statements: int | None


@dataclass
class Row:
    workload: str
    name: str
    records: int
    runs: list[Run] = field(default_factory=list)
    note: str = ""

    @property
    def seconds(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def rate(self) -> float:
        return self.records / self.seconds

    @property
    def rss_mb(self) -> float:
        return statistics.median(r.rss_mb for r in self.runs)

    @property
    def statements_per_1000(self) -> float | None:
        counts = [r.statements for r in self.runs if r.statements is not None]
        return 1000 * statistics.median(counts) / self.records if counts and self.records else None


def run_process(
    command: Sequence[str],
    *,
    stdin: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[float, float, str]:
    """Run to completion; (seconds, peak RSS in MB, stderr tail). Raises on failure."""
    with (
        tempfile.TemporaryFile() as err,
        stdin.open("rb") if stdin else open(os.devnull, "rb") as inp,
    ):
        started = time.perf_counter()
        proc = subprocess.Popen(
            command, stdin=inp, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=cwd
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read()[-4000:].decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{command[0]} exited with {proc.returncode}: {tail}")
    # ru_maxrss is in KB on Linux; for `meltano run` it is the largest child.
    return seconds, usage.ru_maxrss / 1024, tail


# Our W1 row without the backend's heap warm-up, for what the setting buys.
COLD_HEAP_W1 = "target-batched-postgres, Kafka off, server_heap_warmup_mib=0"


def start_bench_postgres() -> Server:
    """A durable PostgreSQL counting statements."""
    return start_postgres(durable=True, settings={"shared_preload_libraries": "pg_stat_statements"})


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.pg = start_bench_postgres()
        self.servers: list[Server] = [self.pg]
        self.conn = psycopg.connect(self.pg.url, autocommit=True)
        self.conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        self.redis = start_redis()
        self.kafka = start_kafka()
        self.servers += [self.redis, self.kafka]
        self.schema_number = 0
        self.rows: list[Row] = []

    def close(self) -> None:
        self.conn.close()
        for server in self.servers:
            server.stop()

    @staticmethod
    def drop_schema(conn: psycopg.Connection, number: int) -> None:
        name = sql.Identifier(f"bench_{number}")
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(name))

    # -- helpers ----------------------------------------------------------------

    def fresh_schema(self, *, w1_table: bool) -> str:
        if self.schema_number:  # the previous run's rows: no autovacuum on them during this one
            self.drop_schema(self.conn, self.schema_number)
        self.schema_number += 1
        schema = f"bench_{self.schema_number}"
        self.drop_schema(self.conn, self.schema_number)
        self.conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        if w1_table:
            table = sql.Identifier(schema, "w1").as_string(self.conn)
            self.conn.execute(W1_DDL.format(table=table).encode())
        return schema

    def reset_statements(self) -> None:
        self.conn.execute("SELECT pg_stat_statements_reset()")

    def count_statements(self) -> int:
        row = self.conn.execute(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements"
            " WHERE query NOT ILIKE '%pg_stat_statements%'"
        ).fetchone()
        return int(row[0]) if row else 0

    def count_rows(self, schema: str, table: str = "w1") -> int:
        row = self.conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
        ).fetchone()
        return int(row[0]) if row else 0

    def measure(
        self, row: Row, once: Callable[[], tuple[float, float, int | None]], repeat: int
    ) -> None:
        self.measure_alternating([(row, once)], repeat)

    def measure_alternating(
        self, pairs: list[tuple[Row, Callable[[], tuple[float, float, int | None]]]], repeat: int
    ) -> None:
        """Run each row `repeat` times, the rows taking turns (their ratio sees the
        same drift of the VM), then report them."""
        for _ in range(repeat):
            for row, once in pairs:
                seconds, rss, statements = once()
                row.runs.append(Run(seconds, rss, statements))
        for row, _ in pairs:
            print(
                f"  {row.workload} {row.name}: {row.rate:,.0f} rec/s "
                f"(runs: {', '.join(f'{r.seconds:.2f}s' for r in row.runs)})",
                flush=True,
            )
            self.rows.append(row)

    # -- targets ----------------------------------------------------------------

    def our_target(
        self,
        path: Path,
        records: int,
        *,
        kafka: bool,
        env: dict[str, str] | None = None,
        w3: bool = False,
        settings: dict[str, object] | None = None,
    ) -> tuple[float, float, int | None]:
        """Our target on `path`, into a fresh schema holding the W1 table (or W3's five)."""
        schema = self.fresh_schema(w1_table=not w3)
        tables = [t.name for t in kv_workload.TABLES] if w3 else ["w1"]
        if w3:
            for table in kv_workload.TABLES:
                self.conn.execute(table.ddl(schema))
        config = {
            "database_url": self.pg.url,
            "default_target_schema": schema,
            "kafka_enabled": kafka,
            "kafka_bootstrap_servers": self.kafka.url,
            "kafka_topic_template": f"{schema}-{{table}}",
            **(settings or {}),
        }
        config_path = DATA / f"target-{schema}.json"
        config_path.write_text(json.dumps(config))
        self.reset_statements()
        seconds, rss, _ = run_process(
            [str(BIN / "target-batched-postgres"), "--config", str(config_path)],
            stdin=path,
            env={**os.environ, **(env or {})},
        )
        statements = self.count_statements()
        landed = sum(self.count_rows(schema, table) for table in tables)
        assert landed == records, f"the target landed {landed} of {records}"
        return seconds, rss, statements

    def raw_copy(self, path: Path, records: int, batch: int) -> tuple[float, float, int | None]:
        schema = self.fresh_schema(w1_table=True)
        self.reset_statements()
        seconds, rss, _ = run_process(
            [sys.executable, "-m", "bench.raw", "copy", "--url", self.pg.url,
             "--schema", schema, "--file", str(path), "--batch", str(batch)],
            cwd=ROOT,
        )  # fmt: skip
        statements = self.count_statements()
        assert self.count_rows(schema) == records
        return seconds, rss, statements

    def peer(self, name: str, path: Path, records: int) -> tuple[float, float, int | None]:
        schema = self.fresh_schema(w1_table=False)
        port = self.pg.url.rsplit(":", 1)[1].split("/")[0]
        common = {"host": "127.0.0.1", "port": int(port), "user": "postgres",
                  "default_target_schema": schema}  # fmt: skip
        if name == "meltanolabs":
            config: dict[str, Any] = {**common, "password": "", "database": "postgres"}
        else:  # pipelinewise requires a password key; trust auth ignores it
            config = {**common, "password": "unused", "dbname": "postgres"}
        config_path = DATA / f"{name}-{schema}.json"
        config_path.write_text(json.dumps(config))
        self.reset_statements()
        seconds, rss, _ = run_process(
            [str(peer_bin(name)), "--config", str(config_path)], stdin=path
        )
        statements = self.count_statements()
        assert self.count_rows(schema) == records, f"{name} lost records"
        return seconds, rss, statements

    # -- W3: the tap and the whole job ----------------------------------------

    def seed_w3(self, records: int) -> None:
        client = redis.Redis.from_url(self.redis.url)
        client.flushall()
        pipe = client.pipeline(transaction=False)
        entries = kv_workload.creates(
            records, seed=42, stream_base=W3_STREAM_BASE, shards=W3_SHARDS, compress=True
        )
        for number, entry in enumerate(entries, 1):
            pipe.xadd(entry.stream_key, {"command": entry.payload})
            if number % 5000 == 0:
                pipe.execute()
        pipe.execute()
        client.close()

    def tap_config(self) -> dict[str, Any]:
        return {
            "redis_url": self.redis.url,
            "stream_keys": [f"{W3_STREAM_BASE}{{shard-*}}"],
            "entry_format": "euler_kv",
        }

    def tap_alone(self, decode_workers: int = 0) -> tuple[float, float, int | None]:
        config_path = DATA / "tap.json"
        workers = {"decode_workers": decode_workers} if decode_workers else {}
        config_path.write_text(json.dumps(self.tap_config() | workers))
        seconds, rss, _ = run_process([str(BIN / "tap-redis-stream"), "--config", str(config_path)])
        return seconds, rss, None

    def raw_xrange(self) -> tuple[float, float, int | None]:
        seconds, rss, _ = run_process(
            [sys.executable, "-m", "bench.raw", "xrange", "--url", self.redis.url,
             "--pattern", f"{W3_STREAM_BASE}{{shard-*}}"],
            cwd=ROOT,
        )  # fmt: skip
        return seconds, rss, None

    def tap_output(self) -> Path:
        """The tap's Singer output for the seeded W3 entries, in a file (not timed)."""
        config_path = DATA / "tap.json"
        config_path.write_text(json.dumps(self.tap_config()))
        path = DATA / "w3-tap.singer"
        with path.open("wb") as out:
            subprocess.run(
                [str(BIN / "tap-redis-stream"), "--config", str(config_path)],
                stdout=out,
                stderr=subprocess.DEVNULL,
                check=True,
            )
        return path

    @staticmethod
    def installed_project() -> Path:
        """This repository's Meltano project, its plugins installed from the checkout.

        `pip_url: -e .` (editable, as this repository's meltano.yml has it for
        development) makes Meltano run catalog discovery before every run;
        installed from a path, wheel or index, it keeps the catalog until the
        tap's settings change, as the README recommends for short, frequent
        runs. Reinstalled each bench (`--clean`): the plugins are the checkout
        as it is now.
        """
        INSTALLED.mkdir(parents=True, exist_ok=True)
        project = (ROOT / "meltano.yml").read_text()
        editable = "pip_url: -e ."
        if project.count(editable) != 2:
            raise RuntimeError(f"meltano.yml: expected two plugins with {editable!r}")
        # A JSON string is a YAML string: the path quoted whatever it holds.
        (INSTALLED / "meltano.yml").write_text(
            project.replace(editable, f"pip_url: {json.dumps(str(ROOT))}")
        )
        subprocess.run(
            [str(MELTANO), "install", "--clean"],
            cwd=INSTALLED,
            env={**os.environ, "UV_COMPILE_BYTECODE": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
        )
        return INSTALLED

    def meltano_run(
        self, records: int, decode_workers: int = 0, project: Path = ROOT
    ) -> tuple[float, float, int | None]:
        schema = self.fresh_schema(w1_table=False)
        for table in kv_workload.TABLES:
            self.conn.execute(table.ddl(schema))
        with tempfile.TemporaryDirectory() as state_dir:
            env = {
                **os.environ,
                "MELTANO_DATABASE_URI": f"sqlite:///{state_dir}/meltano.db",
                "TAP_REDIS_STREAM_REDIS_URL": self.redis.url,
                "TAP_REDIS_STREAM_STREAM_KEYS": json.dumps([f"{W3_STREAM_BASE}{{shard-*}}"]),
                "TAP_REDIS_STREAM_ENTRY_FORMAT": "euler_kv",
                "TAP_REDIS_STREAM_DECODE_WORKERS": str(decode_workers),
                "TARGET_BATCHED_POSTGRES_DATABASE_URL": self.pg.url,
                "TARGET_BATCHED_POSTGRES_DEFAULT_TARGET_SCHEMA": schema,
                "TARGET_BATCHED_POSTGRES_KAFKA_BOOTSTRAP_SERVERS": self.kafka.url,
                "TARGET_BATCHED_POSTGRES_KAFKA_TOPIC_TEMPLATE": f"{schema}-{{table}}",
                "PUSH_TO_KAFKA": "true",
            }
            self.reset_statements()
            seconds, rss, _ = run_process(
                [str(MELTANO), "run", "tap-redis-stream", "target-batched-postgres"],
                env=env,
                cwd=project,
            )
        statements = self.count_statements()
        landed = sum(self.count_rows(schema, t.name) for t in kv_workload.TABLES)
        assert landed == records, f"meltano run landed {landed} of {records}"
        return seconds, rss, statements


def peer_bin(name: str) -> Path:
    """The peer's target-postgres, installed into bench/.venvs/<name> on first use."""
    venv = VENVS / name
    binary = venv / "bin" / "target-postgres"
    if not binary.exists():
        print(f"Installing {PEERS[name]} into {venv} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        # Its dependencies pinned as first measured: an unpinned resolve moves the
        # peer's speed between benches (bench/peers/<name>.txt).
        constraints = ROOT / "bench" / "peers" / f"{name}.txt"
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", "-c", str(constraints), PEERS[name]],
            check=True,
        )
    return binary


def workload_file(name: str, records: int) -> Path:
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"{name}-{records}.singer"
    if not path.exists():
        rows = w1_rows(records) if name == "w1" else w2_rows(records)
        partial = path.with_suffix(".partial")
        write_singer_file(partial, rows)
        partial.rename(path)
    return path


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    copy_rate = {
        row.name: row.rate
        for row in rows
        if row.workload == "W1" and row.name.startswith("raw COPY")
    }
    batch_copy = copy_rate.get(f"raw COPY, commit every {args.batch_size}")
    one_copy = copy_rate.get("raw COPY, one transaction")
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    print()
    print(
        f"{dt.date.today().isoformat()}, {os.cpu_count()} cores ({cpu}), "
        f"Python {platform.python_version()}, PostgreSQL fsync=on synchronous_commit=on; "
        f"median of {args.repeat}; INSERT_BATCH_SIZE={args.batch_size} unless noted"
    )
    print()
    print("| workload | row | records | rec/s | x COPY per batch | x COPY one txn "
          "| SQL stmts / 1k rec | peak RSS MB |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        per_k = row.statements_per_1000
        ratio_b = f"{row.rate / batch_copy:.2f}" if batch_copy and row.workload == "W1" else ""
        ratio_1 = f"{row.rate / one_copy:.2f}" if one_copy and row.workload in ("W1", "W2") else ""
        if row.workload == "W2" and batch_copy:
            ratio_b = f"{row.rate / batch_copy:.2f}"
        rate = f"{row.rate:,.0f}" if row.records else f"({row.seconds:.2f} s)"
        print(
            f"| {row.workload} | {row.name}{row.note} | {row.records:,} | {rate} "
            f"| {ratio_b} | {ratio_1} | {'' if per_k is None else f'{per_k:.1f}'} "
            f"| {row.rss_mb:.0f} |"
        )


def derived(rows: list[Row], args: argparse.Namespace) -> None:
    """The ratios the goals are stated in."""
    by = {(r.workload, r.name): r for r in rows}

    def rate(workload: str, name: str) -> float | None:
        row = by.get((workload, name))
        return row.rate if row else None

    ours = rate("W1", "target-batched-postgres, Kafka off")
    pairs = [
        ("W1 Kafka off / raw COPY per batch", ours,
         rate("W1", f"raw COPY, commit every {args.batch_size}")),
        ("W1 Kafka off / raw COPY one transaction", ours, rate("W1", "raw COPY, one transaction")),
        ("W1 Kafka off / meltanolabs", ours, rate("W1", "meltanolabs target-postgres 0.8.1")),
        ("W1 Kafka off / the same with server_heap_warmup_mib=0", ours,
         rate("W1", COLD_HEAP_W1)),
        ("W1 Kafka off / pipelinewise", ours, rate("W1", "pipelinewise-target-postgres 2.1.2")),
        ("W1 batched / BATCHED_CREATE_ENABLED=false", ours,
         rate("W1", "target-batched-postgres, BATCHED_CREATE_ENABLED=false")),
        ("W2 / W1", rate("W2", "target-batched-postgres, Kafka off"), ours),
        ("W1 Kafka on / raw COPY per batch", rate("W1", "target-batched-postgres, Kafka on"),
         rate("W1", f"raw COPY, commit every {args.batch_size}")),
        ("W1 Kafka on / raw COPY one transaction", rate("W1", "target-batched-postgres, Kafka on"),
         rate("W1", "raw COPY, one transaction")),
        ("W3 tap alone / raw XRANGE + decode", rate("W3", "tap-redis-stream alone"),
         rate("W3", "raw redis-py XRANGE + zstd + orjson")),
        ("W3 tap alone, decode_workers=2 / raw XRANGE + decode", rate("W3", TAP_WORKERS_W3),
         rate("W3", "raw redis-py XRANGE + zstd + orjson")),
        ("W3 meltano run, decode_workers=2 / decode_workers=0",
         rate("W3", f"{MELTANO_W3}, decode_workers=2"), rate("W3", MELTANO_W3)),
    ]  # fmt: skip
    print()
    for label, a, b in pairs:
        if a and b:
            print(f"- {label}: {a / b:.2f}x")
    batched = by.get(("W1", "target-batched-postgres, Kafka off"))
    single = by.get(("W1", "target-batched-postgres, BATCHED_CREATE_ENABLED=false"))
    if batched and single and batched.statements_per_1000 and single.statements_per_1000:
        fewer = 1 - batched.statements_per_1000 / single.statements_per_1000
        print(f"- SQL statements, batched vs unbatched: {100 * fewer:.2f}% fewer")
    whole = by.get(("W3", MELTANO_W3))
    if whole:
        print(f"- meltano run on W3: {whole.rate:,.0f} rec/s")
    installed = by.get(("W3", INSTALLED_W3))
    if installed:
        print(
            f"- meltano run on W3, plugins installed from the checkout: {installed.rate:,.0f} rec/s"
        )
    empty = by.get(("W3", EMPTY_RUN))
    if whole and empty and whole.seconds > empty.seconds:
        records = whole.records / (whole.seconds - empty.seconds)
        print(
            f"- meltano run on W3 less the fixed cost of a run ({empty.seconds:.2f} s): "
            f"{records:,.0f} rec/s"
        )
    big = by.get(("W1", "target-batched-postgres, Kafka off, peak RSS run"))
    if big:
        print(f"- target peak RSS on {big.records:,} records: {big.rss_mb:.0f} MB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--unbatched-records", type=int, default=20_000,
                        help="records for the (slow) BATCHED_CREATE_ENABLED=false row")  # fmt: skip
    parser.add_argument("--rss-records", type=int, default=1_000_000,
                        help="records for the peak-RSS run (0: skip)")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--skip-meltano", action="store_true")
    args = parser.parse_args(argv)
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
    n, repeat = args.records, args.repeat
    w1 = workload_file("w1", n)
    w2 = workload_file("w2", n)
    w1_small = workload_file("w1", args.unbatched_records)
    batch_env = {"INSERT_BATCH_SIZE": str(args.batch_size)}
    bench = Bench(args)
    try:
        print(f"W1/W2: {n:,} records; servers up", flush=True)
        b = bench
        b.measure(
            Row("W1", f"raw COPY, commit every {args.batch_size}", n),
            lambda: b.raw_copy(w1, n, args.batch_size),
            repeat,
        )
        b.measure(Row("W1", "raw COPY, one transaction", n), lambda: b.raw_copy(w1, n, 0), repeat)
        w1_rows: list[tuple[Row, Callable[[], tuple[float, float, int | None]]]] = [
            (
                Row("W1", "target-batched-postgres, Kafka off", n),
                lambda: b.our_target(w1, n, kafka=False, env=batch_env),
            )
        ]
        if not args.skip_peers:
            # Their ratio is a goal: they take turns, so both see the same VM.
            w1_rows.append(
                (
                    Row("W1", "meltanolabs target-postgres 0.8.1", n),
                    lambda: b.peer("meltanolabs", w1, n),
                )
            )
        w1_rows.append(
            (
                Row("W1", COLD_HEAP_W1, n),
                lambda: b.our_target(
                    w1, n, kafka=False, env=batch_env, settings={"server_heap_warmup_mib": 0}
                ),
            )
        )
        b.measure_alternating(w1_rows, repeat)
        b.measure(
            Row("W1", "target-batched-postgres, Kafka on", n),
            lambda: b.our_target(w1, n, kafka=True, env=batch_env),
            repeat,
        )
        small = args.unbatched_records
        b.measure(
            Row("W1", "target-batched-postgres, BATCHED_CREATE_ENABLED=false", small),
            lambda: b.our_target(
                w1_small, small, kafka=False, env={"BATCHED_CREATE_ENABLED": "false"}
            ),
            repeat,
        )
        b.measure(
            Row("W2", "target-batched-postgres, Kafka off", n),
            lambda: b.our_target(w2, n, kafka=False, env=batch_env),
            repeat,
        )
        if not args.skip_peers:
            b.measure(
                Row("W1", "pipelinewise-target-postgres 2.1.2", n),
                lambda: b.peer("pipelinewise", w1, n),
                repeat,
            )
        if not args.skip_meltano:
            b.seed_w3(0)
            b.measure(Row("W3", EMPTY_RUN, 0), lambda: b.meltano_run(0), repeat)
        b.seed_w3(n)
        print(f"W3: seeded {n:,} KV Create entries over {W3_SHARDS} shard keys", flush=True)
        b.measure_alternating(
            [
                (Row("W3", "raw redis-py XRANGE + zstd + orjson", n), b.raw_xrange),
                (Row("W3", "tap-redis-stream alone", n), b.tap_alone),
                (Row("W3", TAP_WORKERS_W3, n), lambda: b.tap_alone(decode_workers=2)),
            ],
            repeat,
        )
        if not args.skip_meltano:
            tap_output = b.tap_output()
            b.measure(
                Row("W3", TARGET_W3, n),
                lambda: b.our_target(tap_output, n, kafka=True, w3=True),
                repeat,
            )
            installed = b.installed_project()
            b.meltano_run(n, project=installed)  # not timed: discovers, and caches, the catalog
            b.measure_alternating(
                [
                    (Row("W3", MELTANO_W3, n), lambda: b.meltano_run(n)),
                    (Row("W3", f"{MELTANO_W3}, decode_workers=2", n),
                     lambda: b.meltano_run(n, decode_workers=2)),
                    (Row("W3", INSTALLED_W3, n), lambda: b.meltano_run(n, project=installed)),
                ],
                repeat,
            )  # fmt: skip
        if args.rss_records:
            big = workload_file("w1", args.rss_records)
            b.measure(
                Row("W1", "target-batched-postgres, Kafka off, peak RSS run", args.rss_records),
                lambda: b.our_target(big, args.rss_records, kafka=False, env=batch_env),
                1,
            )
    finally:
        bench.close()
    print_table(bench.rows, args)
    derived(bench.rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
