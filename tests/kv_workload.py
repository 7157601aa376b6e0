"""A deterministic KV-command (euler_kv) workload and the old drainer's SQL for it.

Used by tests (equivalence with the drainer), the demo and the benchmarks. The
ground truth is plain Python values; entries carry them as Haskell `show`
text (spec: shared/spec/euler-kv-format.md), and `drainer_insert_sql` renders
the SQL the old drainer ran for the same entry (literals, ON CONFLICT DO
NOTHING) independently of the project's decoder.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import zstandard
from psycopg import sql

COMPRESS_MIN_BYTES = 256


@dataclass(frozen=True)
class Ts:
    """A timestamp the drainer sends unquoted: `2024-06-01 10:15:30.123456 UTC`."""

    at: dt.datetime

    def show(self) -> str:
        return self.at.strftime("%Y-%m-%d %H:%M:%S.%f UTC")


@dataclass(frozen=True)
class Raw:
    """Unquoted text such as `True`, `2024-06-01`: PostgreSQL casts it."""

    text: str


@dataclass(frozen=True)
class JsonText:
    """A JSON column: sent as a quoted string whose body is JSON text."""

    value: Any

    def text(self) -> str:
        return json.dumps(self.value, separators=(",", ":"), sort_keys=True)


def haskell_string(text: str) -> str:
    """Haskell `show` of a String: escapes, decimal code points, `\\&` before digits."""
    out = ['"']
    pending_numeric = False
    for ch in text:
        if pending_numeric and ch.isdigit():
            out.append("\\&")
        pending_numeric = False
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif code < 0x20 or code >= 0x7F:
            out.append(f"\\{code}")
            pending_numeric = True
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def show(value: Any) -> Any:
    """The entry's V for a ground-truth value (a string, or a list of strings)."""
    if value is None:
        return "SqlNull"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Ts):
        return value.show()
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, JsonText):
        return haskell_string(value.text())
    if isinstance(value, str):
        return haskell_string(value)
    if isinstance(value, list):
        return [show(v) for v in value]
    raise TypeError(type(value))


def literal(value: Any) -> sql.Composable:
    """The drainer's SQL literal for a ground-truth value."""
    if value is None:
        return sql.SQL("null")
    if isinstance(value, bool):
        return sql.Literal("True" if value else "False")
    if isinstance(value, int | float):
        return sql.SQL(repr(value) if isinstance(value, float) else str(value))
    if isinstance(value, Ts):
        return sql.Literal(value.show())
    if isinstance(value, Raw):
        return sql.Literal(value.text)
    if isinstance(value, JsonText):
        return sql.Literal(value.text())
    if isinstance(value, str):
        return sql.Literal(value)
    if isinstance(value, list):
        items = ",".join(_array_item(v) for v in value)
        return sql.Literal("{" + items + "}")
    raise TypeError(type(value))


def _array_item(value: Any) -> str:
    if value is None:
        return "NULL"
    text = value if isinstance(value, str) else str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


@dataclass(frozen=True)
class Column:
    field: str  # camelCase field name in the entry
    pg_type: str  # column type in the drainer's table
    make: Callable[[random.Random, int], Any]
    optional: bool = False  # sometimes absent from the entry (schema variation)

    @property
    def name(self) -> str:
        return snake(self.field)


@dataclass(frozen=True)
class Table:
    model: str  # PascalCase model tag without the Object/Options suffix
    columns: tuple[Column, ...]

    @property
    def name(self) -> str:
        return snake(self.model)

    def ddl(self, schema: str) -> sql.Composed:
        cols = [
            sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.pg_type))
            for c in self.columns
        ]
        return sql.SQL("CREATE TABLE {} ({}, PRIMARY KEY (id))").format(
            sql.Identifier(schema, self.name), sql.SQL(", ").join(cols)
        )


_BASE = dt.datetime(2024, 6, 1, 10, 15, 30, 123456, tzinfo=dt.UTC)
_NASTY = [
    "plain",
    'quote"d',
    "back\\slash",
    "new\nline",
    "tab\there",
    "caf\u00e9 \u20ac5",
    "semi;colon'",
]


def _uuid(rnd: random.Random, _i: int) -> str:
    return str(uuid.UUID(int=rnd.getrandbits(128)))


def _ts(rnd: random.Random, i: int) -> Ts:
    return Ts(_BASE + dt.timedelta(seconds=i, microseconds=rnd.randrange(1_000_000)))


def _maybe(make: Callable[[random.Random, int], Any], p_null: float = 0.2):
    def inner(rnd: random.Random, i: int) -> Any:
        return None if rnd.random() < p_null else make(rnd, i)

    return inner


TABLES: tuple[Table, ...] = (
    Table(
        "BookingCancellationReason",
        (
            Column("id", "text", _uuid),
            Column("bookingId", "text", _uuid),
            Column("additionalInfo", "text", _maybe(lambda r, i: r.choice(_NASTY), 0.5)),
            Column("createdAt", "timestamptz", _ts),
            Column("driverDistToPickup", "integer", _maybe(lambda r, i: r.randrange(10_000))),
            Column(
                "driverDistToPickupValue",
                "double precision",
                lambda r, i: r.randrange(10_000) + 0.5,
            ),
            Column("reasonCode", "text", lambda r, i: r.choice(["DRIVER_NOT_MOVING", "OTHER"])),
            Column("source", "text", lambda r, i: r.choice(["ByUser", "ByDriver"])),
        ),
    ),
    Table(
        "Booking",
        (
            Column("id", "uuid", _uuid),
            Column("riderId", "text", _uuid),
            Column("status", "text", lambda r, i: r.choice(["NEW", "CONFIRMED", "CANCELLED"])),
            Column("estimatedFare", "numeric(30,2)", lambda r, i: round(r.uniform(10, 900), 2)),
            Column("isScheduled", "boolean", lambda r, i: r.random() < 0.3),
            Column("startTime", "timestamptz", _ts),
            Column(
                "specialLocationTag", "text", _maybe(lambda r, i: r.choice(_NASTY)), optional=True
            ),
            Column("updatedAt", "timestamp", _ts),
        ),
    ),
    Table(
        "SavedLocation",
        (
            Column("id", "text", _uuid),
            Column("riderId", "text", _uuid),
            Column("tag", "text", lambda r, i: r.choice(["Home", "Work", "Gym"])),
            Column("lat", "double precision", lambda r, i: round(r.uniform(-90, 90), 6)),
            Column("lon", "double precision", lambda r, i: round(r.uniform(-180, 180), 6)),
            Column(
                "placeId", "text", _maybe(lambda r, i: f"place-{r.randrange(99)}"), optional=True
            ),
        ),
    ),
    Table(
        "FareV2",
        (
            Column("id", "text", _uuid),
            Column(
                "breakup",
                "jsonb",
                lambda r, i: JsonText({"base": r.randrange(50), "tax": [1, 2.5]}),
            ),
            Column("currency", "text", lambda r, i: "INR"),
            Column("amount", "numeric", lambda r, i: r.randrange(1, 5000)),
            Column("validTill", "date", lambda r, i: Raw(f"2024-07-{1 + i % 28:02d}")),
        ),
    ),
    Table(
        "PersonFlowStatus",
        (
            Column("id", "text", _uuid),
            Column("flowTags", "text[]", lambda r, i: r.sample(["a", "b c", 'd"e', "f,g"], 2)),
            Column("counts", "bigint[]", lambda r, i: [r.randrange(100) for _ in range(3)]),
            Column("isActive", "boolean", lambda r, i: r.random() < 0.5),
            Column("note", "text", _maybe(lambda r, i: r.choice(_NASTY)), optional=True),
            Column("lastSeen", "timestamptz", _ts),
        ),
    ),
)


@dataclass
class Create:
    """One Create entry: its table, ground-truth row (column -> value) and wire bytes."""

    table: Table
    row: dict[str, Any]
    stream_key: str
    force_drain: bool
    payload: bytes = field(repr=False)


def encode_create(
    table: Table,
    fields: dict[str, Any],
    stream_key: str,
    *,
    force_drain: bool = False,
    compress: bool = False,
) -> bytes:
    """The `command` field value of a Create entry for `fields` (fieldName -> value)."""
    envelope = {
        "contents_v2": {
            "cmdVersion": "V2",
            "command": {
                "contents": {name: show(value) for name, value in fields.items()},
                "tag": f"{table.model}Object",
            },
            "dbName": "postgres",
            "tag": f"{table.name}_id_{fields.get('id')}{stream_key[stream_key.find('{') :]}",
            "timestamp": 1717236930123,
        },
        "forceDrainToDB": force_drain,
        "mappings": {},
        "modelObject": {k: v for k, v in fields.items() if isinstance(v, str | int | bool)},
        "tag": "Create",
    }
    data = orjson.dumps(envelope)
    if compress and len(data) >= COMPRESS_MIN_BYTES:
        return zstandard.ZstdCompressor().compress(data)
    return data


def creates(
    n: int,
    *,
    seed: int = 11,
    stream_base: str = "rider-db-sync-stream",
    shards: int = 4,
    compress: bool = False,
    force_every: int = 0,
) -> Iterator[Create]:
    """`n` Create entries over all tables, round-robin over `shards` stream keys."""
    rnd = random.Random(seed)
    for i in range(n):
        table = TABLES[i % len(TABLES)]
        fields = {}
        for column in table.columns:
            if column.optional and rnd.random() < 0.3:
                continue
            fields[column.field] = column.make(rnd, i)
        key = f"{stream_base}{{shard-{i % shards}}}"
        force = bool(force_every) and i % force_every == force_every - 1
        row = {
            table.columns[j].name: fields[c.field]
            for j, c in enumerate(table.columns)
            if c.field in fields
        }
        yield Create(
            table,
            row,
            key,
            force,
            encode_create(table, fields, key, force_drain=force, compress=compress),
        )


def drainer_insert_sql(schema: str, create: Create) -> sql.Composed:
    """The old drainer's INSERT for a Create: literals, ON CONFLICT DO NOTHING."""
    columns = list(create.row)
    return sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING").format(
        sql.Identifier(schema, create.table.name),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(literal(create.row[c]) for c in columns),
    )
