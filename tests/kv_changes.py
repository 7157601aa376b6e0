"""A mixed Create / Update / Delete KV-command workload and the old drainer's SQL for it.

Ground truth is plain values and clause trees; entries carry them in the wire
format (Haskell-show values, `$`-operator where clauses), and `drainer_sql`
renders the statement the old drainer ran for each entry, with literals,
independently of the project's decoder and target.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import orjson
from psycopg import sql

from tests.kv_workload import TABLES, Column, JsonText, Table, literal, show, snake

# Clause trees: ("and"|"or", [c, ...]), ("not", c), ("cmp", field, op, value)
Clause = tuple[Any, ...]
_SQL_OPS = {"=": "=", "$ne": "<>", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


@dataclass
class Change:
    """One entry: its wire payload and the drainer's SQL for it."""

    table: Table
    kind: str  # Create | Update | Delete
    payload: bytes
    statement: sql.Composed


def column_of(field: str, mappings: dict[str, str]) -> str:
    return mappings.get(field, snake(field))


def wire_clause(clause: Clause) -> Any:
    head = clause[0]
    if head in ("and", "or"):
        return {f"${head}": [wire_clause(c) for c in clause[1]]}
    if head == "not":
        return {"$not": wire_clause(clause[1])}
    _, field, op, value = clause
    if op == "=":
        return {field: show(value)}
    return {field: {op: show(value)}}


def sql_clause(clause: Clause, mappings: dict[str, str]) -> sql.Composable:
    head = clause[0]
    if head in ("and", "or"):
        joiner = sql.SQL(" AND " if head == "and" else " OR ")
        return joiner.join(sql.SQL("({})").format(sql_clause(c, mappings)) for c in clause[1])
    if head == "not":
        return sql.SQL("NOT ({})").format(sql_clause(clause[1], mappings))
    _, field, op, value = clause
    column = sql.Identifier(column_of(field, mappings))
    if op in ("$in", "$notIn"):
        if not value:
            return sql.SQL("true")
        word = sql.SQL("IN" if op == "$in" else "NOT IN")
        return sql.SQL("{} {} ({})").format(
            column, word, sql.SQL(", ").join(literal(v) for v in value)
        )
    return sql.SQL("{} {} {}").format(column, sql.SQL(_SQL_OPS[op]), literal(value))


def _envelope(
    table: Table, kind: str, contents: Any, mappings: dict[str, str], extra: dict
) -> bytes:
    suffix = "Object" if kind == "Create" else "Options"
    return orjson.dumps(
        {
            "contents_v2": {
                "cmdVersion": "V2",
                "command": {"contents": contents, "tag": f"{table.model}{suffix}"},
                "dbName": "postgres",
                "tag": f"{table.name}{{shard-0}}",
                "timestamp": 1717237200500,
            },
            "mappings": mappings,
            "tag": kind,
            **extra,
        }
    )


def _mappings_for(table: Table, rnd: random.Random) -> dict[str, str]:
    """Sometimes rename a non-key field on the wire and map it back, as the KV layer does."""
    if rnd.random() < 0.3:
        column = rnd.choice([c for c in table.columns if c.field != "id"])
        return {f"{column.field}Alias": column.name}
    return {}


def _field(column: Column, mappings: dict[str, str]) -> str:
    for wire, db in mappings.items():
        if db == column.name:
            return wire
    return column.field


def changes(n: int, *, seed: int = 17, schema: str) -> list[Change]:
    """`n` entries: about half creates, 30 % updates, 20 % deletes, over all tables."""
    rnd = random.Random(seed)
    live: dict[str, list[str]] = {t.name: [] for t in TABLES}
    deleted: dict[str, list[str]] = {t.name: [] for t in TABLES}
    out: list[Change] = []
    i = 0
    while len(out) < n:
        i += 1
        table = TABLES[rnd.randrange(len(TABLES))]
        roll = rnd.random()
        if roll < 0.5 or not live[table.name]:
            out.append(_create(table, rnd, i, live, deleted, schema))
        elif roll < 0.8:
            out.append(_update(table, rnd, i, live[table.name], schema))
        else:
            out.append(_delete(table, rnd, live, deleted, schema))
    return out


def _create(table, rnd, i, live, deleted, schema) -> Change:
    mappings = _mappings_for(table, rnd)
    values = {c.field: c.make(rnd, i) for c in table.columns}
    if deleted[table.name] and rnd.random() < 0.2:
        values["id"] = deleted[table.name].pop()  # re-create a deleted key
    live[table.name].append(values["id"])
    fields = {_field(c, mappings): values[c.field] for c in table.columns}
    payload = _envelope(
        table,
        "Create",
        {f: show(v) for f, v in fields.items()},
        mappings,
        {"forceDrainToDB": rnd.random() < 0.05, "modelObject": {}},
    )
    columns = [column_of(f, mappings) for f in fields]
    statement = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING").format(
        sql.Identifier(schema, table.name),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(literal(v) for v in fields.values()),
    )
    return Change(table, "Create", payload, statement)


def _where(table: Table, rnd: random.Random, ids: list[str], mappings: dict[str, str]) -> Clause:
    target = rnd.choice(ids)
    other = rnd.choice(
        [c for c in table.columns if c.field != "id" and c.pg_type in ("text", "boolean")]
        or [table.columns[0]]
    )
    other_field = _field(other, mappings)
    pick = rnd.randrange(9)
    if pick == 0:
        return ("cmp", "id", "$in", [*rnd.sample(ids, min(3, len(ids))), None])
    if pick == 1:
        return ("and", [("cmp", "id", "=", target), ("cmp", "id", "$notIn", [])])
    if pick == 2:
        return ("or", [("cmp", "id", "=", target), ("cmp", "id", "=", None)])
    if pick == 3:
        return ("and", [("cmp", "id", "=", target), ("not", ("cmp", "id", "$in", []))])
    if pick == 4:
        return ("and", [("cmp", "id", "$in", [target]), ("cmp", "id", "$ne", ids[0])])
    if pick == 5:
        return ("and", [("cmp", "id", "$gte", target), ("cmp", "id", "$lte", target)])
    if pick == 6:
        return (
            "and",
            [("cmp", "id", "=", target), ("cmp", other_field, "$ne", None)],
        )  # never true
    if pick == 7:
        return (
            "and",
            [("cmp", "id", "$gt", target), ("cmp", "id", "$lt", target)],
        )  # matches nothing
    others = [x for x in rnd.sample(ids, min(3, len(ids))) if x != target]
    return ("and", [("cmp", "id", "=", target), ("and", [("cmp", "id", "$notIn", others)])])


def _update(table: Table, rnd: random.Random, i: int, ids: list[str], schema: str) -> Change:
    mappings = _mappings_for(table, rnd)
    settable = [c for c in table.columns if c.field != "id"]
    chosen = rnd.sample(settable, rnd.randint(1, min(3, len(settable))))
    sets = {
        c: (None if rnd.random() < 0.15 and c.pg_type != "text[]" else c.make(rnd, i + 10_000))
        for c in chosen
    }
    where = _where(table, rnd, ids, mappings)
    contents = [
        [{"key": _field(c, mappings), "value": show(v)} for c, v in sets.items()],
        [{"clauseTag": "where", "clauseContents": wire_clause(where)}],
    ]
    payload = _envelope(
        table, "Update", contents, mappings, {"forceDrainToDB": False, "updatedModel": {}}
    )
    statement = sql.SQL("UPDATE {} SET {} WHERE {}").format(
        sql.Identifier(schema, table.name),
        sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(c.name), literal(v)) for c, v in sets.items()
        ),
        sql_clause(where, mappings),
    )
    return Change(table, "Update", payload, statement)


def _delete(table: Table, rnd: random.Random, live, deleted, schema: str) -> Change:
    mappings = _mappings_for(table, rnd)
    ids = live[table.name]
    where = _where(table, rnd, ids, mappings)
    if where[0] == "cmp" or rnd.random() < 0.5:
        target = ids.pop(rnd.randrange(len(ids)))
        deleted[table.name].append(target)
        where = ("cmp", "id", "=", target)
    contents = {"clauseTag": "where", "clauseContents": wire_clause(where)}
    payload = _envelope(table, "Delete", contents, mappings, {})
    statement = sql.SQL("DELETE FROM {} WHERE {}").format(
        sql.Identifier(schema, table.name), sql_clause(where, mappings)
    )
    return Change(table, "Delete", payload, statement)


__all__ = ["Change", "JsonText", "changes"]
