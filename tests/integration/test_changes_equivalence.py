"""Creates, updates and deletes through tap -> target end as the old drainer's SQL leaves them."""

from __future__ import annotations

import orjson
from psycopg import sql

from tests import kv_changes, kv_workload
from tests.integration.test_pipeline_equivalence import run_pipeline, table_rows


def test_mixed_corpus_equals_the_drainer_sql_in_stream_order(
    tmp_path, redis_url, redis_client, pg_url, pg_conn, pg_schema, unique
):
    reference = f"{pg_schema}_ref"
    entries = kv_changes.changes(1500, schema=reference)
    kinds = {e.kind for e in entries}
    assert kinds == {"Create", "Update", "Delete"}
    key = f"rider-db-sync-stream-{unique}{{shard-0}}"
    pipe = redis_client.pipeline(transaction=False)
    for entry in entries:
        pipe.xadd(key, {"command": entry.payload})
    pipe.execute()
    pg_conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(reference)))
    try:
        for table in kv_workload.TABLES:
            pg_conn.execute(table.ddl(pg_schema))
            pg_conn.execute(table.ddl(reference))
        matched_none = 0
        for entry in entries:  # the old drainer's SQL, one entry at a time, in stream order
            cursor = pg_conn.execute(entry.statement)
            matched_none += entry.kind != "Create" and cursor.rowcount == 0
        assert matched_none > 0  # the corpus exercises clauses that match nothing
        run_pipeline(tmp_path, redis_url, pg_url, [key], pg_schema)
        letters = pg_conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(pg_schema, "_dead_letters"))
        ).fetchone()
        assert letters == (0,)
        for table in kv_workload.TABLES:
            ours = table_rows(pg_conn, pg_schema, table.name)
            assert ours, table.name
            assert ours == table_rows(pg_conn, reference, table.name), table.name
    finally:
        pg_conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(reference)))


SPEC_UPDATE = {
    "contents_v2": {
        "cmdVersion": "V2",
        "command": {
            "contents": [
                [{"key": "isBookingUpdated", "value": "True"}, {"key": "updatedAt", "value": "2024-06-01 10:20:00.5 UTC"}],
                [{"clauseTag": "where", "clauseContents": {"$and": [
                    {"id": '"9c1f3a52-7e1d-4b8e-a0c4-2f6d8e51b7a3"'},
                    {"$and": [{"id": '"9c1f3a52-7e1d-4b8e-a0c4-2f6d8e51b7a3"'}]}]}}],
            ],
            "tag": "BookingOptions",
        },
        "dbName": "postgres",
        "tag": "booking_id_9c1f3a52-7e1d-4b8e-a0c4-2f6d8e51b7a3{shard-73}",
        "timestamp": 1717237200500,
    },
    "forceDrainToDB": False,
    "mappings": {"bppBookingId": "bpp_ride_booking_id"},
    "tag": "Update",
    "updatedModel": {"id": "9c1f3a52-7e1d-4b8e-a0c4-2f6d8e51b7a3", "isBookingUpdated": True},
}  # fmt: skip
SPEC_DELETE = {
    "contents_v2": {
        "cmdVersion": "V2",
        "command": {
            "contents": {"clauseTag": "where", "clauseContents": {"$and": [
                {"$and": [{"riderId": '"0b7c6d2e-1f4a-4e3b-9d8c-5a6b7c8d9e0f"'}, {"tag": '"Home"'}]},
                {"$and": [{"id": '"5b2e9d14-3c6a-4f0b-9e21-7a8c0d4f6e19"'}]}]}},
            "tag": "SavedLocationOptions",
        },
        "dbName": "postgres",
        "tag": "savedReqLocation_id_5b2e9d14-3c6a-4f0b-9e21-7a8c0d4f6e19{shard-3}",
        "timestamp": 1717237500000,
    },
    "mappings": {},
    "tag": "Delete",
}  # fmt: skip


def test_spec_update_and_delete_examples(
    tmp_path, redis_url, redis_client, pg_url, pg_conn, pg_schema, unique
):
    ours, theirs = pg_schema, f"{pg_schema}_ref"
    pg_conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(theirs)))
    try:
        for schema in (ours, theirs):
            booking = sql.Identifier(schema, "booking")
            saved = sql.Identifier(schema, "saved_location")
            pg_conn.execute(
                sql.SQL(
                    "CREATE TABLE {} (id uuid PRIMARY KEY, is_booking_updated boolean, updated_at timestamptz)"
                ).format(booking)
            )
            pg_conn.execute(
                sql.SQL(
                    "INSERT INTO {} VALUES ('9c1f3a52-7e1d-4b8e-a0c4-2f6d8e51b7a3', false, null), ('00000000-0000-0000-0000-000000000001', false, null)"
                ).format(booking)
            )
            pg_conn.execute(
                sql.SQL("CREATE TABLE {} (id text PRIMARY KEY, rider_id text, tag text)").format(
                    saved
                )
            )
            pg_conn.execute(
                sql.SQL(
                    "INSERT INTO {} VALUES ('5b2e9d14-3c6a-4f0b-9e21-7a8c0d4f6e19', '0b7c6d2e-1f4a-4e3b-9d8c-5a6b7c8d9e0f', 'Home'), ('other', '0b7c6d2e-1f4a-4e3b-9d8c-5a6b7c8d9e0f', 'Home')"
                ).format(saved)
            )
        # The spec's SQL, verbatim but for the schema.
        pg_conn.execute(
            sql.SQL(
                "UPDATE {} SET \"is_booking_updated\"='True', \"updated_at\"='2024-06-01 10:20:00.5 UTC'"
                " WHERE (\"id\" = '9c1f3a52-7e1d-4b8e-a0c4-2f6d8e51b7a3') AND (\"id\" = '9c1f3a52-7e1d-4b8e-a0c4-2f6d8e51b7a3')"
            ).format(sql.Identifier(theirs, "booking"))
        )
        pg_conn.execute(
            sql.SQL(
                "DELETE FROM {} WHERE ((\"rider_id\" = '0b7c6d2e-1f4a-4e3b-9d8c-5a6b7c8d9e0f') AND (\"tag\" = 'Home'))"
                " AND (\"id\" = '5b2e9d14-3c6a-4f0b-9e21-7a8c0d4f6e19')"
            ).format(sql.Identifier(theirs, "saved_location"))
        )
        key = f"spec-{unique}"
        redis_client.xadd(key, {"command": orjson.dumps(SPEC_UPDATE)})
        redis_client.xadd(key, {"command": orjson.dumps(SPEC_DELETE)})
        run_pipeline(tmp_path, redis_url, pg_url, [key], ours)
        for table in ("booking", "saved_location"):
            assert table_rows(pg_conn, ours, table) == table_rows(pg_conn, theirs, table)
        assert len(table_rows(pg_conn, ours, "saved_location")) == 1
        assert [r[1] for r in table_rows(pg_conn, ours, "booking")] == [False, True]
    finally:
        pg_conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(theirs)))
