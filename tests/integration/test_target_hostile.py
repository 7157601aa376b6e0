"""Hostile names and values: quoted, never executed, never colliding."""

from __future__ import annotations

from psycopg import sql

from target_batched_postgres.identifiers import fit_identifier, table_name_for_stream
from tests.integration.target_helpers import config, record_msg, run_target, schema_msg


def test_reserved_words_quotes_and_long_colliding_names(pg_url, pg_conn, pg_schema):
    long_a = "c" * 70 + "_a"
    long_b = "c" * 70 + "_b"  # same first 63 bytes as long_a
    stream = 'users"; DROP TABLE x; --'
    props = {
        "select": {"type": "integer"},
        'we"ird; col': {"type": ["string", "null"]},
        long_a: {"type": ["string", "null"]},
        long_b: {"type": ["string", "null"]},
    }
    value = "'); DROP TABLE users; --"
    lines = [
        schema_msg(stream, props, ["select"]),
        record_msg(stream, {"select": 1, 'we"ird; col': value, long_a: "a", long_b: "b"}),
    ]
    run_target(config(pg_url, pg_schema), lines)
    table = table_name_for_stream(stream)
    got = pg_conn.execute(
        sql.SQL("SELECT {}, {}, {}, {} FROM {}").format(
            sql.Identifier("select"),
            sql.Identifier('we"ird; col'),
            sql.Identifier(fit_identifier(long_a)),
            sql.Identifier(fit_identifier(long_b)),
            sql.Identifier(pg_schema, table),
        )
    ).fetchall()
    assert got == [(1, value, "a", "b")]
    tables = {
        name
        for (name,) in pg_conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (pg_schema,)
        )
    }
    assert tables == {table, "_dead_letters"}
