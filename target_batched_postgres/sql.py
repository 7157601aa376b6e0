"""Pure SQL builders: `psycopg.sql.Composed` statements, no connection needed.

Identifiers are always quoted through `psycopg.sql.Identifier`; values are
always bound parameters. A batch insert is one statement whatever its size:
one JSON array of rows, read by `json_to_recordset` and cast by PostgreSQL
into each column's own type, so the statement text (and its prepared plan)
depends only on the column signature, never on the number of rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from psycopg import sql
from psycopg.abc import AdaptContext

from target_batched_postgres.identifiers import fit_identifier
from target_batched_postgres.pgtypes import ColumnType, Kind


class Identifier(sql.Identifier):
    """A quoted identifier that survives psycopg's placeholder parsing.

    psycopg looks for `%s` placeholders in the whole query text, quoted
    identifiers included: a column named `a%sb` or `pct%` would break every
    statement that binds values. `%` is doubled here, and the writer executes
    every statement with a parameter sequence (empty for DDL), so psycopg
    always turns `%%` back into `%`.
    """

    def as_bytes(self, context: AdaptContext | None = None) -> bytes:
        return super().as_bytes(context).replace(b"%", b"%%")


class OnConflict(StrEnum):
    """What an insert does when a row with the same key exists."""

    DO_NOTHING = "do_nothing"
    ERROR = "error"
    UPSERT = "upsert"


def qualified(schema: str, table: str) -> Identifier:
    return Identifier(schema, table)


def build_create_schema(schema: str) -> sql.Composed:
    return sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(Identifier(schema))


def _type(column_type: ColumnType) -> sql.Identifier:
    return Identifier(column_type.schema, column_type.name)


def build_create_table(
    schema: str,
    table: str,
    columns: Sequence[tuple[str, ColumnType]],
    primary_key: Sequence[str],
) -> sql.Composed:
    """CREATE TABLE IF NOT EXISTS with the given columns and primary key."""
    parts = [sql.SQL("{} {}").format(Identifier(name), _type(ct)) for name, ct in columns]
    if primary_key:
        parts.append(
            sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(Identifier, primary_key)))
        )
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
        qualified(schema, table), sql.SQL(", ").join(parts)
    )


def build_add_column(schema: str, table: str, column: str, column_type: ColumnType) -> sql.Composed:
    return sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
        qualified(schema, table), Identifier(column), _type(column_type)
    )


# Allocates and frees one block of (page size x pages) bytes in the backend,
# both bound (see `server_heap_warmup_mib`); octet_length reads the result's
# header, not its bytes. repeat copies its argument once per repetition: 16 MiB
# in 4 KiB pieces takes about 20 ms here, one byte at a time about 85 ms.
HEAP_WARMUP_PAGE = 4096
HEAP_WARMUP_QUERY = sql.SQL("SELECT octet_length(repeat(repeat('x', %s), %s))")

# Columns of a table with their types' schema, name and category (A = array), and
# whether an INSERT that leaves the column out gives it something else than NULL
# (a default, an identity or a generated value).
COLUMNS_QUERY = sql.SQL(
    "SELECT a.attname, n.nspname, t.typname, t.typcategory,"
    " a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> ''"
    " FROM pg_catalog.pg_attribute a"
    " JOIN pg_catalog.pg_type t ON t.oid = a.atttypid"
    " JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace"
    " WHERE a.attrelid = to_regclass(format('%%I.%%I', %s::text, %s::text))"
    " AND a.attnum > 0 AND NOT a.attisdropped"
    " ORDER BY a.attnum"
)


def _conflict_clause(
    on_conflict: OnConflict, columns: Sequence[str], key_columns: Sequence[str]
) -> sql.Composable:
    if on_conflict is OnConflict.ERROR:
        return sql.SQL("")
    if on_conflict is OnConflict.UPSERT and key_columns:
        updates = [c for c in columns if c not in key_columns]
        if updates:
            return sql.SQL(" ON CONFLICT ({}) DO UPDATE SET {}").format(
                sql.SQL(", ").join(map(Identifier, key_columns)),
                sql.SQL(", ").join(
                    sql.SQL("{0} = EXCLUDED.{0}").format(Identifier(c)) for c in updates
                ),
            )
    return sql.SQL(" ON CONFLICT DO NOTHING")


def build_insert(
    schema: str,
    table: str,
    columns: Sequence[str],
    types: Sequence[ColumnType],
    *,
    on_conflict: OnConflict = OnConflict.DO_NOTHING,
    key_columns: Sequence[str] = (),
) -> sql.Composed:
    """One INSERT for any number of rows: one JSON array of row objects.

    `INSERT INTO t (a, b) SELECT CAST(x.a AS type_a), CAST(x.b AS type_b)
    FROM json_to_recordset($1::json) AS x(a text, b text) ON CONFLICT DO NOTHING`.
    Each row object is keyed by column name. Every value arrives as text (a
    string's content, a number's digits, an object's JSON) and PostgreSQL casts
    it into the column's own type, as it cast the drainer's literals. With no
    columns at all, the parameter is the row count.
    """
    target = qualified(schema, table)
    conflict = _conflict_clause(on_conflict, columns, key_columns)
    if not columns:
        return sql.SQL("INSERT INTO {} SELECT FROM generate_series(1, %s){}").format(
            target, conflict
        )
    names = [Identifier(c) for c in columns]
    casts = [_value(name, ct) for name, ct in zip(names, types, strict=True)]
    definitions = [
        sql.SQL("{} json" if ct.kind is Kind.ARRAY else "{} text").format(name)
        for name, ct in zip(names, types, strict=True)
    ]
    statement = "INSERT INTO {} ({}) SELECT {} FROM json_to_recordset(%s::json) AS x({}){}"
    return sql.SQL(statement).format(
        target,
        sql.SQL(", ").join(names),
        sql.SQL(", ").join(casts),
        sql.SQL(", ").join(definitions),
        conflict,
    )


def build_populate_insert(
    schema: str,
    table: str,
    columns: Sequence[str],
    *,
    on_conflict: OnConflict = OnConflict.DO_NOTHING,
    key_columns: Sequence[str] = (),
) -> sql.Composed:
    """The same insert, read by `json_populate_recordset` into the table's row type.

    `INSERT INTO t (a, b) SELECT p.a, p.b FROM json_populate_recordset(NULL::t, $1::json)
    AS p ON CONFLICT DO NOTHING`. PostgreSQL feeds each value to its column's
    input function (a string's content, any other value's JSON text) and turns
    JSON arrays into array columns itself: what `build_insert`'s casts do, in
    about 20% less server time. It differs in one case, a string bound for a
    json or jsonb column (kept as a JSON string where the cast parses it), so
    the writer sends such a string as the JSON it holds, and takes this form
    only for built-in column types (not domains or composites, where the
    rules differ as well).
    """
    target = qualified(schema, table)
    conflict = _conflict_clause(on_conflict, columns, key_columns)
    names = [Identifier(c) for c in columns]
    return sql.SQL(
        "INSERT INTO {} ({}) SELECT {} FROM json_populate_recordset(NULL::{}, %s::json) AS p{}"
    ).format(
        target,
        sql.SQL(", ").join(names),
        sql.SQL(", ").join(sql.SQL("p.{}").format(n) for n in names),
        target,
        conflict,
    )


def _value(name: Identifier, column_type: ColumnType) -> sql.Composable:
    """A row value cast into its column: from text, or for an array column from JSON.

    An array column takes a flat JSON array element by element (each element's
    text, JSON null as NULL), or a string holding an array literal (what the
    client sends for nested arrays, and whatever else a record holds there).
    """
    if column_type.kind is not Kind.ARRAY:
        return sql.SQL("CAST(x.{} AS {})").format(name, _type(column_type))
    return sql.SQL(
        "CASE json_typeof(x.{0}) WHEN 'array'"
        " THEN CAST(ARRAY(SELECT json_array_elements_text(x.{0})) AS {1})"
        " ELSE CAST(x.{0} #>> '{{}}' AS {1}) END"
    ).format(name, _type(column_type))


def build_create_dead_letter_table(schema: str, table: str) -> sql.Composed:
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} ("
        "id bigserial PRIMARY KEY, "
        "table_name text NOT NULL, "
        "payload jsonb NOT NULL, "
        "error text NOT NULL, "
        "sqlstate text, "
        "source_stream text, "
        "source_entry_id text, "
        "failed_at timestamptz NOT NULL DEFAULT now())"
    ).format(qualified(schema, table))


def build_create_dead_letter_source_index(schema: str, table: str) -> sql.Composed:
    """One dead letter per source entry: an entry replayed after a crash that fails
    again adds no second row. Rows without a source (records of other taps) never
    collide: NULLs are distinct."""
    return sql.SQL(
        "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} (source_stream, source_entry_id)"
    ).format(Identifier(fit_identifier(f"{table}_source_entry")), qualified(schema, table))


def build_insert_dead_letter(schema: str, table: str) -> sql.Composed:
    return sql.SQL(
        "INSERT INTO {} (table_name, payload, error, sqlstate, source_stream, source_entry_id)"
        " VALUES (%s, %s::jsonb, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
    ).format(qualified(schema, table))
