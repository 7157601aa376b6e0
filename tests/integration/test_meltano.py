"""`meltano run` end to end against the real servers, and composition with other plugins."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psycopg
import pytest
import redis as redis_lib
import yaml
from psycopg import sql

from tests import kv_workload
from tests.integration.target_helpers import consume, metric_totals

ROOT = Path(__file__).resolve().parents[2]
MELTANO = Path(os.environ.get("MELTANO_BIN", ROOT / ".venv-meltano" / "bin" / "meltano"))
OTHER_PLUGINS = {
    "extractors": {
        "name": "tap-jsonl",
        "namespace": "tap_jsonl",
        "executable": "tap-jsonl",
        "pip_url": "tap-jsonl==0.3.1",
        "settings": [
            {"name": "path", "kind": "string"},
            {"name": "stream_name", "kind": "string"},
            {"name": "primary_keys", "kind": "array"},
        ],
    },
    "loaders": {
        "name": "target-jsonl",
        "namespace": "target_jsonl",
        "executable": "target-jsonl",
        "pip_url": "target-jsonl==0.1.4",
        "settings": [
            {"name": "destination_path", "kind": "string"},
            {"name": "do_timestamp_file", "kind": "boolean"},
        ],
    },
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Meltano project: this repository's plugins (from meltano.yml) plus two others."""
    if not MELTANO.exists():
        pytest.fail(f"{MELTANO} is missing: run `make meltano` (make test does)")
    path = tmp_path_factory.mktemp("meltano")
    spec = yaml.safe_load((ROOT / "meltano.yml").read_text())
    for kind, plugins in spec["plugins"].items():
        for plugin in plugins:
            plugin["pip_url"] = f"-e {ROOT}"
        plugins.append(OTHER_PLUGINS[kind])
    (path / "meltano.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    subprocess.run(
        [str(MELTANO), "install"], cwd=path, env=meltano_env(path), check=True, capture_output=True
    )
    return path


def meltano_env(project: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{MELTANO.parent}:{os.environ['PATH']}",
        "MELTANO_DATABASE_URI": f"sqlite:///{project}/.meltano/meltano.db",
        **extra,
    }


def meltano(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(MELTANO), *args],
        cwd=project,
        env=meltano_env(project, **env),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def seed(client: redis_lib.Redis, base: str, first: int, count: int) -> list[kv_workload.Create]:
    entries = list(kv_workload.creates(first + count, seed=9, stream_base=base, shards=3))[first:]
    pipe = client.pipeline(transaction=False)
    for entry in entries:
        pipe.xadd(entry.stream_key, {"command": entry.payload})
    pipe.execute()
    return entries


def statements_for(entries: list[kv_workload.Create], batch: int) -> int:
    """INSERT statements the target needs: per table and column signature, ceil(n / batch)."""
    signatures = Counter((e.table.name, tuple(sorted(e.row))) for e in entries)
    return sum(math.ceil(n / batch) for n in signatures.values())


def counts(conn: psycopg.Connection, schema: str) -> dict[str, int]:
    found = {}
    for table in kv_workload.TABLES:
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table.name))
        row = conn.execute(query).fetchone()
        found[table.name] = row[0] if row else 0
    return found


def test_meltano_run_resumes_and_env_overrides_change_statements(
    project, redis_url, redis_client, pg_url, pg_conn, pg_schema, kafka_bootstrap, unique
):
    base = f"rider-db-sync-stream-{unique}"
    env = {
        "TAP_REDIS_STREAM_REDIS_URL": redis_url,
        "TAP_REDIS_STREAM_STREAM_KEYS": json.dumps([f"{base}{{shard-*}}"]),
        "TARGET_BATCHED_POSTGRES_DATABASE_URL": pg_url,
        "TARGET_BATCHED_POSTGRES_DEFAULT_TARGET_SCHEMA": pg_schema,
        "TARGET_BATCHED_POSTGRES_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "TARGET_BATCHED_POSTGRES_KAFKA_TOPIC_TEMPLATE": f"{unique}-{{table}}",
        "PUSH_TO_KAFKA": "true",
    }
    job = ("run", "--state-id-suffix", unique, "tap-redis-stream", "target-batched-postgres")
    seed(redis_client, base, 0, 150)
    first = metric_totals(meltano(project, *job, **env).stderr)
    assert first["records_written"] == 150
    assert counts(pg_conn, pg_schema) == {t.name: 30 for t in kv_workload.TABLES}

    seed(redis_client, base, 150, 50)
    second = metric_totals(meltano(project, *job, **env).stderr)
    assert second["records_written"] == 50  # resumed from Meltano's state: only the new ones
    assert counts(pg_conn, pg_schema) == {t.name: 40 for t in kv_workload.TABLES}

    third_entries = seed(redis_client, base, 200, 100)
    one_each = {"TARGET_BATCHED_POSTGRES_MAX_BATCHES_PER_STATEMENT": "1"}  # counts exact
    third = metric_totals(meltano(project, *job, **env, **one_each, INSERT_BATCH_SIZE="7").stderr)
    assert third["records_written"] == 100
    assert third["insert_statements"] == statements_for(third_entries, 7)
    assert third["insert_statements"] > statements_for(third_entries, 100)

    messages = consume(kafka_bootstrap, f"{unique}-booking", expected=60)
    assert len(messages) == 60  # every booking exactly once across the three runs


def test_meltano_config_lists_env_overrides(project):
    result = meltano(
        project,
        "config",
        "list",
        "target-batched-postgres",
        TARGET_BATCHED_POSTGRES_INSERT_BATCH_SIZE="7",
    )
    assert (
        "insert_batch_size [env: TARGET_BATCHED_POSTGRES_INSERT_BATCH_SIZE] current value: 7"
        in result.stdout
    )


def test_tap_into_another_target(project, tmp_path, redis_url, redis_client, unique):
    base = f"to-jsonl-{unique}"
    seed(redis_client, base, 0, 25)
    out = tmp_path / "jsonl"
    out.mkdir()
    meltano(
        project,
        "run",
        "--state-id-suffix",
        unique,
        "tap-redis-stream",
        "target-jsonl",
        TAP_REDIS_STREAM_REDIS_URL=redis_url,
        TAP_REDIS_STREAM_STREAM_KEYS=json.dumps([f"{base}{{shard-*}}"]),
        TARGET_JSONL_DESTINATION_PATH=str(out),
        TARGET_JSONL_DO_TIMESTAMP_FILE="false",
    )
    lines = {f.stem: f.read_text().splitlines() for f in out.glob("*.jsonl")}
    assert set(lines) == {t.name for t in kv_workload.TABLES}
    assert all(len(v) == 5 for v in lines.values())
    assert json.loads(lines["booking"][0])["_sdc_operation"] == "insert"


def test_another_tap_into_the_target(project, tmp_path, pg_url, pg_conn, pg_schema, unique):
    source = tmp_path / "people.jsonl"
    source.write_text(
        "\n".join(json.dumps({"id": i, "name": f"n{i}", "age": 20 + i}) for i in range(12))
    )
    meltano(
        project,
        "run",
        "--state-id-suffix",
        unique,
        "tap-jsonl",
        "target-batched-postgres",
        TAP_JSONL_PATH=str(source),
        TAP_JSONL_STREAM_NAME="people",
        TAP_JSONL_PRIMARY_KEYS='["id"]',
        TARGET_BATCHED_POSTGRES_DATABASE_URL=pg_url,
        TARGET_BATCHED_POSTGRES_DEFAULT_TARGET_SCHEMA=pg_schema,
        INSERT_BATCH_SIZE="5",
    )
    rows = pg_conn.execute(
        sql.SQL("SELECT id, name, age FROM {} ORDER BY id").format(
            sql.Identifier(pg_schema, "people")
        )
    ).fetchall()
    assert rows == [(i, f"n{i}", 20 + i) for i in range(12)]


def test_demo_runs_against_existing_servers(redis_url, pg_url, kafka_bootstrap):
    """`make demo`'s script, pointed at the session's servers by URL."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "demo.py")],
        env={
            **os.environ,
            "PATH": f"{MELTANO.parent}:{os.environ['PATH']}",
            "MELTANO_BIN": str(MELTANO),
            "DEMO_POSTGRES_URL": pg_url,
            "DEMO_REDIS_URL": redis_url,
            "DEMO_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert re.search(r"demo_atlas_app\.booking\s+500\n", result.stdout)
    assert "dead letters (demo_atlas_app._dead_letters): 1" in result.stdout
    assert "Failed entries (Redis demo-rider-db-sync-failed-stream): 1" in result.stdout
    assert "run 2: 500 records written or dead-lettered" in result.stdout
