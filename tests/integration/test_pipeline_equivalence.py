"""tap -> target lands the same rows as the old drainer's SQL for the same entries."""

from __future__ import annotations

import subprocess

import orjson
import psycopg
import redis as redis_lib
from psycopg import sql

from tests import kv_workload
from tests.integration.tap_helpers import TAP_BIN
from tests.integration.target_helpers import TARGET_BIN, write_config
from tests.integration.test_tap import SPEC_CREATE


def table_rows(conn: psycopg.Connection, schema: str, table: str) -> list[tuple]:
    query = sql.SQL("SELECT * FROM {} ORDER BY 1").format(sql.Identifier(schema, table))
    return conn.execute(query).fetchall()


def run_pipeline(tmp_path, redis_url: str, pg_url: str, keys: list[str], schema: str) -> None:
    tap_cfg = write_config(tmp_path, {"redis_url": redis_url, "stream_keys": keys})
    target_cfg = write_config(tmp_path, {"database_url": pg_url, "default_target_schema": schema})
    tap = subprocess.Popen([str(TAP_BIN), "--config", str(tap_cfg)], stdout=subprocess.PIPE)
    target = subprocess.run(
        [str(TARGET_BIN), "--config", str(target_cfg)],
        stdin=tap.stdout,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert tap.wait(timeout=60) == 0
    assert target.returncode == 0, target.stderr[-3000:]


def test_generated_corpus_equals_the_drainer_sql(
    tmp_path, redis_url, redis_client: redis_lib.Redis, pg_url, pg_conn, pg_schema, unique
):
    base = f"rider-db-sync-stream-{unique}"
    entries = list(
        kv_workload.creates(1200, seed=3, stream_base=base, shards=4, compress=True, force_every=17)
    )
    pipe = redis_client.pipeline(transaction=False)
    for entry in entries:
        pipe.xadd(entry.stream_key, {"command": entry.payload})
    pipe.execute()
    reference = f"{pg_schema}_ref"
    pg_conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(reference)))
    try:
        for table in kv_workload.TABLES:
            pg_conn.execute(table.ddl(pg_schema))
            pg_conn.execute(table.ddl(reference))
        for entry in entries:  # the old drainer, entry by entry, in stream order
            pg_conn.execute(kv_workload.drainer_insert_sql(reference, entry))
        run_pipeline(tmp_path, redis_url, pg_url, [f"{base}{{shard-*}}"], pg_schema)
        for table in kv_workload.TABLES:
            ours = table_rows(pg_conn, pg_schema, table.name)
            theirs = table_rows(pg_conn, reference, table.name)
            assert len(ours) == 240
            assert ours == theirs, table.name
    finally:
        pg_conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(reference)))


def test_spec_create_example_equals_the_drainer_sql(
    tmp_path, redis_url, redis_client: redis_lib.Redis, pg_url, pg_conn, pg_schema, unique
):
    key = f"rider-db-sync-stream-{unique}{{shard-5}}"
    redis_client.xadd(key, {"command": orjson.dumps(SPEC_CREATE)})
    ddl = (
        "CREATE TABLE {} (booking_id text PRIMARY KEY, additional_info text, created_at timestamptz,"
        " distance_unit text, driver_dist_to_pickup integer, driver_dist_to_pickup_value double precision,"
        " reason_code text, ride_id text, source text)"
    )
    ours = sql.Identifier(pg_schema, "booking_cancellation_reason")
    theirs = sql.Identifier(pg_schema, "drainer_reference")
    pg_conn.execute(sql.SQL(ddl).format(ours))
    pg_conn.execute(sql.SQL(ddl).format(theirs))
    # The spec's SQL for this entry, verbatim but for the table name.
    pg_conn.execute(
        sql.SQL(
            'INSERT INTO {} ("additional_info", "booking_id", "created_at", "distance_unit",'
            ' "driver_dist_to_pickup", "driver_dist_to_pickup_value", "reason_code", "ride_id", "source")'
            " VALUES (null, '9c1f3a52-7e1d-4b8e-a0c4-2f6d8e51b7a3', '2024-06-01 10:15:30.123456 UTC',"
            " 'Meter', 850, 850.0, 'DRIVER_NOT_MOVING', null, 'ByUser') ON CONFLICT DO NOTHING"
        ).format(theirs)
    )
    run_pipeline(tmp_path, redis_url, pg_url, [key], pg_schema)
    assert table_rows(pg_conn, pg_schema, "booking_cancellation_reason") == table_rows(
        pg_conn, pg_schema, "drainer_reference"
    )
