"""Updates and deletes (`_sdc_operation`, `_sdc_where`) against a real PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import pytest
from psycopg import sql

from target_batched_postgres.metrics import DrainerMetric
from tests.integration.target_helpers import (
    config,
    consume,
    record_msg,
    rows,
    run_target,
    schema_msg,
)

PROPS = {
    "id": {"type": "integer"},
    "name": {"type": ["string", "null"]},
    "n": {"type": ["integer", "null"]},
    "_sdc_operation": {"type": "string"},
    "_sdc_where": {},
    "_sdc_force_drain": {"type": "boolean"},
}


def eq(column: str, value: Any) -> dict[str, Any]:
    return {"column": column, "op": "=", "value": value}


def change(op: str, where: Any, **columns: Any) -> str:
    return record_msg("people", {**columns, "_sdc_operation": op, "_sdc_where": where})


def insert(i: int, name: str = "a", n: int | None = None) -> str:
    return record_msg("people", {"id": i, "name": name, "n": i if n is None else n})


def test_stream_order_holds_across_a_bucket(pg_url, pg_schema, pg_conn):
    lines = [
        schema_msg("people", PROPS, ["id"]),
        insert(1, "first"),
        insert(2, "other"),
        change("update", eq("id", 1), name="updated"),
        change("delete", eq("id", 1)),
        insert(1, "re-created"),  # same key again, after the delete
        change("update", eq("id", 2), name="two"),
        insert(3, "three"),
    ]
    run = run_target(config(pg_url, pg_schema, insert_batch_size=100), lines)
    assert rows(pg_conn, pg_schema, "people") == [
        (1, "re-created", 1),
        (2, "two", 2),
        (3, "three", 3),
    ]
    assert run.count(DrainerMetric.UPDATES_APPLIED) == 2
    assert run.count(DrainerMetric.DELETES_APPLIED) == 1


def test_update_matching_no_row_is_counted_not_an_error(pg_url, pg_schema, pg_conn):
    lines = [
        schema_msg("people", PROPS, ["id"]),
        insert(1),
        change("update", eq("id", 99), name="ghost"),
        change("delete", eq("id", None)),  # the drainer's `"id" = null` matches nothing
    ]
    run = run_target(config(pg_url, pg_schema), lines)
    assert rows(pg_conn, pg_schema, "people") == [(1, "a", 1)]
    assert run.count(DrainerMetric.CHANGES_MATCHED_NO_ROW) == 2
    assert run.count(DrainerMetric.RECORDS_DEAD_LETTERED) == 0


# Each clause with the WHERE the old drainer rendered for it (literals).
CLAUSES = [
    (eq("n", 3), '"n" = 3'),
    ({"column": "n", "op": "!=", "value": 3}, '"n" <> 3'),
    ({"column": "n", "op": ">", "value": 6}, '"n" > 6'),
    ({"column": "n", "op": ">=", "value": 6}, '"n" >= 6'),
    ({"column": "n", "op": "<", "value": 2}, '"n" < 2'),
    ({"column": "n", "op": "<=", "value": 2}, '"n" <= 2'),
    ({"column": "n", "op": "in", "value": [1, 4, None]}, '"n" IN (1, 4, null)'),
    ({"column": "n", "op": "not_in", "value": [1, 4]}, '"n" NOT IN (1, 4)'),
    ({"column": "n", "op": "not_in", "value": [1, None]}, '"n" NOT IN (1, null)'),
    ({"column": "n", "op": "in", "value": []}, "true"),
    ({"column": "n", "op": "not_in", "value": []}, "true"),
    ({"not": eq("name", "even")}, "NOT (\"name\" = 'even')"),
    (
        {"and": [eq("name", "odd"), {"or": [eq("n", 1), {"column": "n", "op": ">", "value": 6}]}]},
        '("name" = \'odd\') AND (("n" = 1) OR ("n" > 6))',
    ),
    ({"or": [eq("name", None), eq("n", 0)]}, '("name" = null) OR ("n" = 0)'),
    ({"column": "name", "op": "!=", "value": None}, '"name" <> null'),
    ({"column": "name", "op": ">", "value": "e"}, "\"name\" > 'e'"),
]


@pytest.mark.parametrize(("clause", "drainer_where"), CLAUSES, ids=[c[1] for c in CLAUSES])
def test_every_where_operator_matches_the_drainer_sql(
    pg_url, pg_schema, pg_conn, clause, drainer_where
):
    seed = [insert(i, "even" if i % 2 == 0 else "odd", n=i) for i in range(8)]
    seed.append(record_msg("people", {"id": 8, "name": None, "n": None}))
    lines = [schema_msg("people", PROPS, ["id"]), *seed, change("delete", clause)]
    run_target(config(pg_url, pg_schema), lines)
    ours = {r[0] for r in rows(pg_conn, pg_schema, "people")}
    # The reference: the same rows in a twin table, the drainer's literal SQL.
    twin = sql.Identifier(pg_schema, "twin")
    pg_conn.execute(
        sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, name text, n bigint)").format(twin)
    )
    pg_conn.execute(
        sql.SQL(
            "INSERT INTO {} SELECT i, CASE WHEN i % 2 = 0 THEN 'even' ELSE 'odd' END, i"
            " FROM generate_series(0, 7) i"
        ).format(twin)
    )
    pg_conn.execute(sql.SQL("INSERT INTO {} VALUES (8, null, null)").format(twin))
    pg_conn.execute(sql.SQL("DELETE FROM {} WHERE ").format(twin) + sql.SQL(drainer_where))
    reference = {r[0] for r in pg_conn.execute(sql.SQL("SELECT id FROM {}").format(twin))}
    assert ours == reference


def test_malformed_changes_are_dead_lettered_with_the_reason(pg_url, pg_schema, pg_conn):
    lines = [
        schema_msg("people", PROPS, ["id"]),
        insert(1),
        change("update", eq("nope", 1), name="x"),
        change("delete", None),
        change("update", eq("id", 1), n="not a number"),
        insert(2),
    ]
    run = run_target(config(pg_url, pg_schema), lines)
    assert rows(pg_conn, pg_schema, "people") == [(1, "a", 1), (2, "a", 2)]
    assert run.count(DrainerMetric.RECORDS_DEAD_LETTERED) == 3
    errors = [
        e
        for (e,) in pg_conn.execute(
            sql.SQL("SELECT error FROM {} ORDER BY id").format(
                sql.Identifier(pg_schema, "_dead_letters")
            )
        )
    ]
    assert "lacks" in errors[0]
    assert "not an object" in errors[1]
    assert "invalid input syntax for type bigint" in errors[2]


def test_unknown_operation_is_refused(tmp_path, pg_url, pg_schema):
    from tests.integration.target_helpers import run_target_cli, state_msg

    lines = [schema_msg("people", PROPS, ["id"]), change("merge", eq("id", 1)), state_msg({"n": 1})]
    result = run_target_cli(tmp_path, config(pg_url, pg_schema), lines)
    assert result.returncode != 0
    assert "_sdc_operation='merge'" in result.stderr
    assert result.stdout.strip() == ""


def test_kafka_for_updates_deletes_and_kafka_only_tables(
    pg_url, pg_schema, pg_conn, kafka_bootstrap, unique
):
    cfg = config(
        pg_url,
        pg_schema,
        kafka_enabled=True,
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_topic_template=f"{{table}}-{unique}",
        kafka_only_tables=["people"],
    )
    lines = [
        schema_msg("people", PROPS, ["id"]),
        record_msg("people", {"id": 1, "name": "a", "n": 1, "_sdc_force_drain": True}),
        record_msg("people", {"id": 2, "name": "b", "n": 2, "_sdc_force_drain": True}),
        change("update", eq("id", 1), name="kafka only"),  # Kafka only: not in PostgreSQL
        record_msg(
            "people",
            {
                "name": "forced",
                "_sdc_operation": "update",
                "_sdc_where": eq("id", 2),
                "_sdc_force_drain": True,
                "_sdc_model": {"id": 2, "name": "forced", "n": 2},
            },
        ),
        change("delete", eq("id", 1)),  # deletes always reach PostgreSQL
    ]
    run_target(cfg, lines)
    assert rows(pg_conn, pg_schema, "people") == [(2, "forced", 2)]
    messages = consume(kafka_bootstrap, f"people-{unique}", expected=4)
    ops = [str(dict(m.headers() or [])["operation"]) for m in messages]
    assert sorted(ops) == [
        "b'insert'",
        "b'insert'",
        "b'update'",
        "b'update'",
    ]  # no delete event by default
    updates = [
        json.loads(m.value() or b"null")
        for m in messages
        if dict(m.headers() or [])["operation"] == b"update"
    ]
    assert {"name": "kafka only"} in updates  # no model sent: the columns it sets
    assert {"id": 2, "name": "forced", "n": 2} in updates  # the full updated row
    # With the setting, a delete publishes an event.
    run_target(
        {**cfg, "kafka_publish_deletes": True},
        [schema_msg("people", PROPS, ["id"]), change("delete", eq("id", 2))],
    )
    events = consume(kafka_bootstrap, f"people-{unique}", expected=5)
    deletes = [
        json.loads(m.value() or b"null")
        for m in events
        if dict(m.headers() or [])["operation"] == b"delete"
    ]
    assert deletes == [{"where": eq("id", 2)}]
    assert rows(pg_conn, pg_schema, "people") == []


def test_db_only_table_updates_and_deletes_skip_kafka(
    pg_url, pg_schema, pg_conn, kafka_bootstrap, unique
):
    cfg = config(
        pg_url,
        pg_schema,
        kafka_enabled=True,
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_topic_template=f"{{table}}-{unique}",
        kafka_publish_deletes=True,
        db_only_tables=["people"],
    )
    lines = [
        schema_msg("people", PROPS, ["id"]),
        insert(1),
        insert(2),
        change("update", eq("id", 1), name="db only"),
        change("delete", eq("id", 2)),
    ]
    run = run_target(cfg, lines)
    assert rows(pg_conn, pg_schema, "people") == [(1, "db only", 1)]
    assert run.count(DrainerMetric.KAFKA_MESSAGES_PUBLISHED) == 0
    assert consume(kafka_bootstrap, f"people-{unique}", expected=1, timeout=4) == []
