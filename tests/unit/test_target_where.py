"""Where-clause SQL builder: pure, no server."""

from __future__ import annotations

import pytest

from target_batched_postgres.errors import RecordRejected
from target_batched_postgres.pgtypes import BIGINT, TEXT, ColumnType, Kind
from target_batched_postgres.where import WhereBuilder, build_delete, build_update

TYPES = {"id": BIGINT, "name": TEXT, "tags": ColumnType("pg_catalog", "_text", Kind.ARRAY)}


def build(clause):
    condition, params = WhereBuilder(TYPES, lambda c: c).build(clause)
    return condition.as_string(None), params


def test_comparison_binds_and_casts_to_the_column_type():
    assert build({"column": "id", "op": ">=", "value": 5}) == (
        '"id" >= CAST(%s AS "pg_catalog"."int8")',
        ["5"],
    )


def test_null_is_bound_not_rewritten():
    assert build({"column": "name", "op": "=", "value": None}) == (
        '"name" = CAST(%s AS "pg_catalog"."text")',
        [None],
    )


def test_in_lists_and_empty_lists():
    sql_text, params = build({"column": "id", "op": "not_in", "value": [1, 2]})
    assert (
        sql_text == '"id" NOT IN (CAST(%s AS "pg_catalog"."int8"), CAST(%s AS "pg_catalog"."int8"))'
    )
    assert params == ["1", "2"]
    assert build({"column": "id", "op": "in", "value": []}) == ("TRUE", [])
    assert build({"column": "id", "op": "not_in", "value": []}) == ("TRUE", [])


def test_nesting_keeps_parentheses_and_parameter_order():
    clause = {
        "and": [
            {"column": "id", "op": "=", "value": 1},
            {
                "not": {
                    "or": [
                        {"column": "name", "op": "=", "value": "a"},
                        {"column": "tags", "op": "=", "value": ["x"]},
                    ]
                }
            },
        ]
    }
    sql_text, params = build(clause)
    assert sql_text == (
        '("id" = CAST(%s AS "pg_catalog"."int8")) AND '
        '(NOT (("name" = CAST(%s AS "pg_catalog"."text"))'
        ' OR ("tags" = CAST(%s AS "pg_catalog"."_text"))))'
    )
    assert params == ["1", "a", '{"x"}']


@pytest.mark.parametrize(
    ("clause", "reason"),
    [
        (None, "not an object"),
        ({}, "one key"),
        ({"and": []}, "non-empty"),
        ({"xor": [1]}, "unknown where clause operator"),
        ({"column": "nope", "op": "=", "value": 1}, "lacks"),
        ({"column": "id", "op": "~", "value": 1}, "unknown where clause comparison"),
        ({"column": "id", "op": "in", "value": 1}, "needs a list"),
    ],
)
def test_malformed_clauses_are_rejected(clause, reason):
    with pytest.raises(RecordRejected, match=reason):
        build(clause)


def test_nesting_is_bounded():
    clause: dict = {"column": "id", "op": "=", "value": 1}
    for _ in range(100):
        clause = {"not": clause}
    with pytest.raises(RecordRejected, match="deeper"):
        build(clause)


def test_update_and_delete_statements_quote_identifiers():
    condition, _ = WhereBuilder(TYPES, lambda c: c).build({"column": "id", "op": "=", "value": 1})
    update = build_update("s", 'we"ird', [("name", TEXT)], condition).as_string(None)
    assert update == (
        'UPDATE "s"."we""ird" SET "name" = CAST(%s AS "pg_catalog"."text")'
        ' WHERE "id" = CAST(%s AS "pg_catalog"."int8")'
    )
    assert build_delete("s", "t", condition).as_string(None) == (
        'DELETE FROM "s"."t" WHERE "id" = CAST(%s AS "pg_catalog"."int8")'
    )
