"""`make demo`: the main job on embedded servers, twice, with a short summary.

Starts PostgreSQL, Redis and the Kafka-protocol broker from pip wheels on free
loopback ports (or uses DEMO_POSTGRES_URL, DEMO_REDIS_URL and
DEMO_KAFKA_BOOTSTRAP_SERVERS), seeds a KV-command workload into
`demo-rider-db-sync-stream{shard-0..3}`, runs

    meltano run tap-redis-stream target-batched-postgres

adds more entries, runs it again (it resumes from Meltano's state), prints what
landed in PostgreSQL and Kafka, and stops the servers it started.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import redis  # noqa: E402
from confluent_kafka import Consumer  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402
from psycopg import sql  # noqa: E402

from tests import kv_workload  # noqa: E402
from tests.integration.target_helpers import metric_totals  # noqa: E402
from tests.servers import Server, start_kafka, start_postgres, start_redis  # noqa: E402

SCHEMA = "demo_atlas_app"
STREAM_BASE = "demo-rider-db-sync-stream"
FAILED_STREAM = "demo-rider-db-sync-failed-stream"
SHARDS = 4
TOPIC_PREFIX = "demo-aap-sessionizer-"
MELTANO = Path(os.environ.get("MELTANO_BIN", ROOT / ".venv-meltano" / "bin" / "meltano"))


def servers() -> list[Server]:
    found = []
    for env, start in (
        ("DEMO_POSTGRES_URL", start_postgres),
        ("DEMO_REDIS_URL", start_redis),
        ("DEMO_KAFKA_BOOTSTRAP_SERVERS", start_kafka),
    ):
        url = os.environ.get(env)
        found.append(Server(env, url, external=True) if url else start())
    return found


def seed(client: redis.Redis, first: int, count: int, *, poison: bool) -> int:
    """XADD `count` Create entries (every 25th force-drained, some zstd) and maybe a poison one."""
    pipe = client.pipeline(transaction=False)
    entries = list(
        kv_workload.creates(
            first + count,
            seed=42,
            stream_base=STREAM_BASE,
            shards=SHARDS,
            compress=True,
            force_every=25,
        )
    )[first:]
    for entry in entries:
        pipe.xadd(entry.stream_key, {"command": entry.payload})
    if poison:
        # Undecodable: the tap moves it to the failed-entries stream.
        pipe.xadd(f"{STREAM_BASE}{{shard-2}}", {"command": b'{"tag": "Create", "contents_v2": '})
        # Decodable, but PostgreSQL rejects the value: the target dead-letters it.
        fare = next(t for t in kv_workload.TABLES if t.name == "fare_v2")
        key = f"{STREAM_BASE}{{shard-1}}"
        bad = kv_workload.encode_create(fare, {"id": "bad-fare-1", "amount": "lots"}, key)
        pipe.xadd(key, {"command": bad})
    pipe.execute()
    return len(entries) + 2 * int(poison)


def meltano_env(pg: Server, rds: Server, kafka: Server) -> dict[str, str]:
    return {
        **os.environ,
        "TAP_REDIS_STREAM_REDIS_URL": rds.url,
        "TAP_REDIS_STREAM_STREAM_KEYS": json.dumps([f"{STREAM_BASE}{{shard-*}}"]),
        "TAP_REDIS_STREAM_ENTRY_FORMAT": "euler_kv",
        "TAP_REDIS_STREAM_ON_PARSE_ERROR": "dead_letter",
        "TAP_REDIS_STREAM_FAILED_STREAM": FAILED_STREAM,
        "TARGET_BATCHED_POSTGRES_DATABASE_URL": pg.url,
        "TARGET_BATCHED_POSTGRES_DEFAULT_TARGET_SCHEMA": SCHEMA,
        "TARGET_BATCHED_POSTGRES_KAFKA_BOOTSTRAP_SERVERS": kafka.url,
        "TARGET_BATCHED_POSTGRES_KAFKA_TOPIC_TEMPLATE": TOPIC_PREFIX + "{table}",
        "PUSH_TO_KAFKA": "true",
    }


def meltano_run(env: dict[str, str], project: Path, number: int) -> dict[str, int]:
    """Run the job; return the target's counters from its METRIC lines."""
    started = time.monotonic()
    result = subprocess.run(
        [str(MELTANO), "run", "tap-redis-stream", "target-batched-postgres"],
        cwd=project, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    log = ROOT / "output" / f"demo-run-{number}.log"
    log.parent.mkdir(exist_ok=True)
    log.write_text(result.stderr)
    if result.returncode != 0:
        sys.stderr.write(result.stderr[-6000:])
        raise SystemExit(f"meltano run failed with exit code {result.returncode}")
    totals = metric_totals(result.stderr)
    print(f"  meltano run finished in {time.monotonic() - started:.1f} s")
    return totals


def topic_counts(bootstrap: str) -> Counter[str]:
    topics = [
        t for t in AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
        if t.startswith(TOPIC_PREFIX)
    ]  # fmt: skip
    counts: Counter[str] = Counter()
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"demo-{time.time_ns()}",
        "auto.offset.reset": "earliest", "session.timeout.ms": 2000, "heartbeat.interval.ms": 200,
    })  # fmt: skip
    consumer.subscribe(topics)
    idle_until = time.monotonic() + 8
    while time.monotonic() < idle_until:
        msg = consumer.poll(0.3)
        if msg is not None and msg.error() is None:
            counts[str(msg.topic())] += 1
            idle_until = time.monotonic() + 2
    consumer.close()
    return counts


def summary(pg: Server, rds: Server, kafka: Server, runs: list[dict[str, int]]) -> None:
    with psycopg.connect(pg.url) as conn:
        print("\nRows in PostgreSQL:")
        for table in kv_workload.TABLES:
            query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(SCHEMA, table.name))
            count = conn.execute(query).fetchone()
            print(f"  {SCHEMA}.{table.name:<30} {count[0] if count else 0:>6}")
        letters = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(SCHEMA, "_dead_letters"))
        ).fetchone()
        print(f"  dead letters ({SCHEMA}._dead_letters): {letters[0] if letters else 0}")
    print("\nKafka messages per topic:")
    for topic, messages in sorted(topic_counts(kafka.url).items()):
        print(f"  {topic:<50} {messages:>6}")
    failed = redis.Redis.from_url(rds.url).xlen(FAILED_STREAM)
    print(f"\nFailed entries (Redis {FAILED_STREAM}): {failed}")
    print("\nStatements vs records, per run:")
    for i, totals in enumerate(runs, 1):
        records = totals.get("records_written", 0) + totals.get("records_dead_lettered", 0)
        print(
            f"  run {i}: {records} records written or dead-lettered, "
            f"{totals.get('insert_statements', 0)} INSERT statements, "
            f"{totals.get('sql_statements', 0)} SQL statements in all, "
            f"{totals.get('kafka_messages_published', 0)} Kafka messages"
        )


def main() -> int:
    started = servers()
    pg, rds, kafka = started
    try:
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
            for name in ["_dead_letters", *(t.name for t in kv_workload.TABLES)]:
                drop = sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(SCHEMA, name))
                conn.execute(drop)
            for table in kv_workload.TABLES:
                conn.execute(table.ddl(SCHEMA))
        client = redis.Redis.from_url(rds.url)
        # Demo-only names, so a rerun against existing servers starts clean.
        client.delete(FAILED_STREAM, *(f"{STREAM_BASE}{{shard-{i}}}" for i in range(SHARDS)))
        env = meltano_env(pg, rds, kafka)
        with tempfile.TemporaryDirectory() as state_dir:
            env["MELTANO_DATABASE_URI"] = f"sqlite:///{state_dir}/meltano.db"
            print(f"Seeded {seed(client, 0, 2000, poison=True)} entries over {SHARDS} shard keys")
            print("Run 1: meltano run tap-redis-stream target-batched-postgres")
            runs = [meltano_run(env, ROOT, 1)]
            print(f"Seeded {seed(client, 2000, 500, poison=False)} more entries")
            print("Run 2 (resumes from Meltano's state)")
            runs.append(meltano_run(env, ROOT, 2))
        summary(pg, rds, kafka, runs)
    finally:
        for server in started:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
