"""Structured where clauses (`_sdc_where`) -> SQL with bound values; pure, no I/O.

The clause shape (produced by tap_redis_stream.entries.euler_kv):

- `{"and": [W, ...]}`, `{"or": [W, ...]}`, `{"not": W}`
- `{"column": c, "op": OP, "value": v}` with OP one of `=`, `!=`, `>`, `>=`,
  `<`, `<=` (one value) or `in`, `not_in` (a list of values).

The SQL reproduces the old drainer's: each value is bound and cast to the
column's own type (as the drainer's literal was), a NULL value is bound as
NULL (so `col = NULL` matches nothing, as the drainer's `"col" = null` did),
and `in` / `not_in` with an empty list are TRUE.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from psycopg import sql

from target_batched_postgres.errors import RecordRejected
from target_batched_postgres.pgtypes import ColumnType
from target_batched_postgres.sql import Identifier
from target_batched_postgres.values import ENCODERS

_COMPARISONS = {"=": "=", "!=": "<>", ">": ">", ">=": ">=", "<": "<", "<=": "<="}
MAX_DEPTH = 64

ColumnFor = Callable[[str], str]


class WhereBuilder:
    """Builds a WHERE condition against one table's column types."""

    def __init__(self, types: Mapping[str, ColumnType], column_for: ColumnFor) -> None:
        self._types = types
        self._column_for = column_for

    def build(self, clause: Any) -> tuple[sql.Composable, list[Any]]:
        params: list[Any] = []
        return self._node(clause, params, 0), params

    def _node(self, node: Any, params: list[Any], depth: int) -> sql.Composable:
        if depth > MAX_DEPTH:
            raise RecordRejected(f"where clause nested deeper than {MAX_DEPTH}")
        if not isinstance(node, dict):
            raise RecordRejected(f"where clause node is not an object: {node!r}")
        if "column" in node:
            return self._comparison(node, params)
        if len(node) != 1:
            raise RecordRejected(f"where clause node must have one key: {sorted(node)}")
        ((key, value),) = node.items()
        if key in ("and", "or"):
            if not isinstance(value, list) or not value:
                raise RecordRejected(f"where clause {key!r} needs a non-empty list")
            joiner = sql.SQL(" AND " if key == "and" else " OR ")
            parts = [sql.SQL("({})").format(self._node(v, params, depth + 1)) for v in value]
            return joiner.join(parts)
        if key == "not":
            return sql.SQL("NOT ({})").format(self._node(value, params, depth + 1))
        raise RecordRejected(f"unknown where clause operator {key!r}")

    def _comparison(self, node: Mapping[str, Any], params: list[Any]) -> sql.Composable:
        name = self._column_for(str(node["column"]))
        column_type = self._types.get(name)
        if column_type is None:
            raise RecordRejected(f"where clause names column {name!r}, which the table lacks")
        encode = ENCODERS[column_type.kind]
        column = Identifier(name)
        cast = sql.SQL("CAST(%s AS {})").format(Identifier(column_type.schema, column_type.name))
        op = node.get("op")
        value = node.get("value")
        if op in _COMPARISONS:
            params.append(encode(value))
            return sql.SQL("{} {} {}").format(column, sql.SQL(_COMPARISONS[op]), cast)
        if op in ("in", "not_in"):
            if not isinstance(value, list):
                raise RecordRejected(f"where clause {op!r} on {name!r} needs a list")
            if not value:
                return sql.SQL("TRUE")  # the drainer's reading of `$in []` and `$notIn []`
            params.extend(encode(v) for v in value)
            return sql.SQL("{} {} ({})").format(
                column,
                sql.SQL("IN" if op == "in" else "NOT IN"),
                sql.SQL(", ").join([cast] * len(value)),
            )
        raise RecordRejected(f"unknown where clause comparison {op!r}")


def build_update(
    schema: str,
    table: str,
    set_columns: list[tuple[str, ColumnType]],
    condition: sql.Composable,
) -> sql.Composed:
    """UPDATE t SET c = CAST(%s AS type), ... WHERE condition."""
    assignments = [
        sql.SQL("{} = CAST(%s AS {})").format(Identifier(name), Identifier(ct.schema, ct.name))
        for name, ct in set_columns
    ]
    return sql.SQL("UPDATE {} SET {} WHERE {}").format(
        Identifier(schema, table), sql.SQL(", ").join(assignments), condition
    )


def build_delete(schema: str, table: str, condition: sql.Composable) -> sql.Composed:
    return sql.SQL("DELETE FROM {} WHERE {}").format(Identifier(schema, table), condition)
