"""The fault harness's workload, its reference, and what must hold after every scenario.

The workload is `kv_changes` (creates, updates, deletes over every table, with
the old drainer's SQL for each entry) plus entries PostgreSQL rejects (so the
per-record fallback and the dead-letter table run), one entry the tap cannot
decode (it goes to the failed-entries stream), and an *audit token*: every
create and update also sets `audit_token` to a token of its own. A trigger on
each table logs every committed row change with its token, so whether an entry
was ever written (and when) can be read back after any kill, whatever later
entries did to the row.

The reference applies the drainer's SQL in stream order to a schema of its
own and records, per entry, the trace the entry must leave: an INSERT or
UPDATE carrying its token, or for a delete the DELETE of each row it removed
(with the row's token at that moment). A no-op update or delete leaves none.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from psycopg import sql

from target_batched_postgres.sql import build_create_dead_letter_table
from tests import kv_changes
from tests.kv_workload import TABLES, Raw, Table, encode_create, literal, show

AUDIT_TABLE = "_audit"
TOKEN_COLUMN = "audit_token"
TOKEN_FIELD = "auditToken"
_TABLES = {t.name: t for t in TABLES}


@dataclass(frozen=True)
class Trace:
    """A row change an entry must have committed: (op, table, token[, id])."""

    op: str  # INSERT | UPDATE | DELETE
    table: str
    token: str | None  # NEW.audit_token (insert/update) or OLD.audit_token (delete)
    row_id: str | None = None  # deletes: the removed row


@dataclass
class Entry:
    """One stream entry of the workload, and what it must leave behind."""

    index: int
    kind: str  # Create | Update | Delete | Malformed
    table: str | None
    payload: bytes = field(repr=False)
    statement: sql.Composed | None = field(default=None, repr=False)
    poison: str | None = None  # why PostgreSQL rejects it: expect one dead letter
    token: str | None = None  # the audit token its create or update sets
    traces: list[Trace] = field(default_factory=list)  # filled by the reference
    key: str = ""  # Redis stream key, set when seeded
    entry_id: str = ""  # Redis entry ID, set when seeded

    @property
    def publishable(self) -> bool:
        """Published to Kafka: creates and updates (also those PostgreSQL rejects)."""
        return self.kind in ("Create", "Update")

    @property
    def source(self) -> tuple[str, str]:
        return (self.key, self.entry_id)

    @property
    def id_tuple(self) -> tuple[int, int]:
        ms, _, seq = self.entry_id.partition("-")
        return (int(ms), int(seq))


def _with_token(change: kv_changes.Change, token: str) -> bytes:
    envelope = orjson.loads(change.payload)
    contents = envelope["contents_v2"]["command"]["contents"]
    if change.kind == "Create":
        contents[TOKEN_FIELD] = show(token)
    elif change.kind == "Update":
        contents[0].append({"key": TOKEN_FIELD, "value": show(token)})
    return orjson.dumps(envelope)


def _update_payload(table: Table, sets: Mapping[str, Any], row_id: str) -> bytes:
    contents = [
        [{"key": name, "value": show(value)} for name, value in sets.items()],
        [{"clauseTag": "where", "clauseContents": {"id": show(row_id)}}],
    ]
    return orjson.dumps(
        {
            "contents_v2": {
                "cmdVersion": "V2",
                "command": {"contents": contents, "tag": f"{table.model}Options"},
                "dbName": "postgres",
                "tag": f"{table.name}_id_{row_id}{{shard-0}}",
                "timestamp": 1717237200500,
            },
            "forceDrainToDB": False,
            "mappings": {},
            "tag": "Update",
            "updatedModel": {"id": row_id},
        }
    )


def _poison_create(rnd: random.Random, i: int, schema: str, choice: int) -> Entry:
    """A create PostgreSQL rejects: a value its column type refuses, or a NUL byte."""
    bad: Any
    if choice == 0:
        table, column, bad, why = _TABLES["booking"], "estimatedFare", "lots", "numeric"
    elif choice == 1:
        table, column, bad, why = _TABLES["fare_v2"], "validTill", Raw("2024-13-45"), "date"
    else:
        table, column, bad, why = _TABLES["saved_location"], "tag", "Ho\x00me", "NUL byte"
    fields = {c.field: c.make(rnd, i) for c in table.columns}
    fields[column] = bad
    fields[TOKEN_FIELD] = f"t{i}"
    payload = encode_create(table, fields, "k{shard-0}")
    columns = [c.name for c in table.columns]
    values = [fields[c.field] for c in table.columns]
    statement = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING").format(
        sql.Identifier(schema, table.name),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(_safe_literal(v) for v in values),
    )
    return Entry(i, "Create", table.name, payload, statement, poison=why, token=f"t{i}")


def _safe_literal(value: Any) -> sql.Composable:
    # The drainer's literal; a NUL byte cannot even be sent: E'\\x00' fails alike.
    if isinstance(value, str) and "\x00" in value:
        return sql.SQL("E'\\x00'")
    return literal(value)


def _poison_update(i: int, create: Entry, schema: str) -> Entry:
    """An update of a row created just before it, with a value the column refuses."""
    table = _TABLES["booking"]
    row_id = orjson.loads(create.payload)["contents_v2"]["command"]["contents"]["id"]
    row_id = orjson.loads(row_id.encode()) if row_id.startswith('"') else row_id
    payload = _update_payload(table, {"isScheduled": Raw("maybe"), TOKEN_FIELD: f"t{i}"}, row_id)
    statement = sql.SQL("UPDATE {} SET is_scheduled = 'maybe' WHERE id = {}").format(
        sql.Identifier(schema, table.name), sql.Literal(row_id)
    )
    return Entry(i, "Update", table.name, payload, statement, poison="boolean", token=f"t{i}")


def build(n: int, *, seed: int, reference_schema: str, poison_every: int = 40) -> list[Entry]:
    """`n` kv_changes entries with audit tokens, plus poison and one malformed entry.

    After about every `poison_every`-th create comes a create PostgreSQL
    rejects (the three kinds in turn), after every 10th booking create an
    update of it PostgreSQL rejects.
    """
    rnd = random.Random(seed * 7919 + 1)
    entries: list[Entry] = []
    creates = bookings = poisoned = 0
    offset = rnd.randrange(poison_every)
    for change in kv_changes.changes(n, seed=seed, schema=reference_schema):
        i = len(entries)
        token = f"t{i}"
        payload = _with_token(change, token)
        entries.append(
            Entry(i, change.kind, change.table.name, payload, change.statement, token=token)
        )
        if change.kind != "Create":
            continue
        creates += 1
        if creates % poison_every == offset:
            entries.append(_poison_create(rnd, len(entries), reference_schema, poisoned % 3))
            poisoned += 1
        elif change.table.name == "booking":
            bookings += 1
            if bookings % 10 == offset % 10:
                entries.append(_poison_update(len(entries), entries[-1], reference_schema))
    at = rnd.randrange(len(entries) // 4, len(entries))
    entries.insert(at, Entry(at, "Malformed", None, b'{"tag": "Create", "contents_v2": [unclosed'))
    for index, entry in enumerate(entries):
        entry.index = index
    return entries


# -- schemas ----------------------------------------------------------------------


def _audit_ddl(schema: str) -> list[sql.Composed]:
    audit = sql.Identifier(schema, AUDIT_TABLE)
    return [
        sql.SQL(
            "CREATE TABLE {} (seq bigserial PRIMARY KEY, tbl text, op text NOT NULL,"
            " row_id text, token text, written_at timestamptz NOT NULL DEFAULT clock_timestamp())"
        ).format(audit),
        # Deferred: the log row is written as the transaction commits, so its
        # time is (within microseconds) the commit's, not the statement's.
        sql.SQL(
            "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF TG_OP = 'DELETE' THEN"
            "  INSERT INTO {} (tbl, op, row_id, token)"
            "  VALUES (TG_TABLE_NAME, TG_OP, OLD.id::text, OLD.audit_token);"
            " ELSE"
            "  INSERT INTO {} (tbl, op, row_id, token)"
            "  VALUES (TG_TABLE_NAME, TG_OP, NEW.id::text, NEW.audit_token);"
            " END IF; RETURN NULL; END $$"
        ).format(sql.Identifier(schema, "_audit_row"), audit, audit),
        sql.SQL(
            "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " INSERT INTO {} (tbl, op, row_id, token)"
            " VALUES (NEW.source_stream, 'DEAD_LETTER', NEW.source_entry_id, NULL);"
            " RETURN NULL; END $$"
        ).format(sql.Identifier(schema, "_audit_dead_letter"), audit),
    ]


def _audit_trigger(schema: str, table: str, function: str, ops: str) -> sql.Composed:
    return sql.SQL(
        "CREATE CONSTRAINT TRIGGER audit AFTER {} ON {} DEFERRABLE INITIALLY DEFERRED"
        " FOR EACH ROW EXECUTE FUNCTION {}()"
    ).format(sql.SQL(ops), sql.Identifier(schema, table), sql.Identifier(schema, function))


def create_tables(
    conn: psycopg.Connection, schema: str, *, audited: bool, dead_letter_table: str = ""
) -> None:
    """The workload's tables (the drainer's DDL); audited ones get the token column and trigger.

    An audited schema also gets the target's dead-letter table (as its preflight
    would create it) with a trigger logging each dead letter's source entry.
    """
    if audited:
        for statement in _audit_ddl(schema):
            conn.execute(statement)
    for table in TABLES:
        conn.execute(table.ddl(schema))
        if audited:
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN {} text").format(
                    sql.Identifier(schema, table.name), sql.Identifier(TOKEN_COLUMN)
                )
            )
            conn.execute(
                _audit_trigger(schema, table.name, "_audit_row", "INSERT OR UPDATE OR DELETE")
            )
    if audited and dead_letter_table:
        conn.execute(build_create_dead_letter_table(schema, dead_letter_table))
        conn.execute(_audit_trigger(schema, dead_letter_table, "_audit_dead_letter", "INSERT"))


def apply_reference(conn: psycopg.Connection, schema: str, entries: Sequence[Entry]) -> None:
    """The old drainer's SQL in stream order; fills each entry's expected traces.

    Poison entries must fail here too (else they are no poison): the drainer's
    SQL for them is run in a savepoint and must raise.
    """
    token_of: dict[tuple[str, str], str | None] = {}
    for entry in entries:
        if entry.statement is None or entry.table is None:
            continue
        if entry.poison is not None:
            try:
                with conn.transaction():
                    conn.execute(entry.statement)
            except (psycopg.DataError, psycopg.IntegrityError, ValueError):
                continue
            raise AssertionError(f"poison entry {entry.index} ({entry.poison}) was accepted")
        token = entry.token
        ids = [str(r[0]) for r in conn.execute(entry.statement + sql.SQL(" RETURNING id"))]
        if entry.kind == "Delete":
            entry.traces = [
                Trace("DELETE", entry.table, token_of.pop((entry.table, i), None), i) for i in ids
            ]
        elif ids:
            entry.traces = [
                Trace("INSERT" if entry.kind == "Create" else "UPDATE", entry.table, token)
            ]
            for i in ids:
                token_of[(entry.table, i)] = token


# -- what landed, and the checks ------------------------------------------------


@dataclass
class Landed:
    """Everything a scenario left in PostgreSQL and Redis, read once at the end."""

    tables: dict[str, list[tuple]]  # ours, without the token column
    reference: dict[str, list[tuple]]
    audit: dict[Trace, dt.datetime]  # each committed row change, first commit time
    dead_letters: Counter[tuple[str, str]]  # (stream, entry id) -> rows
    dead_letter_errors: dict[tuple[str, str], str]
    failed_entries: Counter[tuple[str, str]]  # tap's failed-entries stream
    failed_at: dict[tuple[str, str], dt.datetime]


def _rows(conn: psycopg.Connection, schema: str, table: Table) -> list[tuple]:
    columns = sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns)
    query = sql.SQL("SELECT {} FROM {} ORDER BY id").format(
        columns, sql.Identifier(schema, table.name)
    )
    return conn.execute(query).fetchall()


def read_landed(
    conn: psycopg.Connection,
    schema: str,
    reference_schema: str,
    failed: Iterable[tuple[str, str, int]],
    dead_letter_table: str,
) -> Landed:
    """Read the scenario's outcome. `failed`: (stream, entry id, ms) of the failed-entries stream."""
    audit: dict[Trace, dt.datetime] = {}
    query = sql.SQL("SELECT op, tbl, token, row_id, written_at FROM {} ORDER BY seq").format(
        sql.Identifier(schema, AUDIT_TABLE)
    )
    for op, tbl, token, row_id, at in conn.execute(query):
        keep_id = row_id if op in ("DELETE", "DEAD_LETTER") else None
        audit.setdefault(Trace(op, tbl, token, keep_id), at)
    letters: Counter[tuple[str, str]] = Counter()
    errors: dict[tuple[str, str], str] = {}
    query = sql.SQL("SELECT source_stream, source_entry_id, error FROM {}").format(
        sql.Identifier(schema, dead_letter_table)
    )
    for stream, entry_id, error in conn.execute(query):
        letters[(str(stream), str(entry_id))] += 1
        errors[(str(stream), str(entry_id))] = error
    failed_entries: Counter[tuple[str, str]] = Counter()
    failed_at: dict[tuple[str, str], dt.datetime] = {}
    for stream, entry_id, ms in failed:
        failed_entries[(stream, entry_id)] += 1
        failed_at.setdefault((stream, entry_id), dt.datetime.fromtimestamp(ms / 1000, dt.UTC))
    return Landed(
        tables={t.name: _rows(conn, schema, t) for t in TABLES},
        reference={t.name: _rows(conn, reference_schema, t) for t in TABLES},
        audit=audit,
        dead_letters=letters,
        dead_letter_errors=errors,
        failed_entries=failed_entries,
        failed_at=failed_at,
    )


@dataclass(frozen=True)
class KafkaMessage:
    topic: str
    value: bytes
    headers: dict[str, bytes]


@dataclass
class Verdict:
    """What a scenario's checks found; `problems` empty means every guarantee held."""

    problems: list[str] = field(default_factory=list)
    rows_lost: int = 0  # reference rows missing or different, entries never written
    rows_duplicated: int = 0  # rows in PK tables the reference does not have
    dead_letter_duplicates: int = 0
    failed_entry_duplicates: int = 0
    kafka_messages: int = 0
    kafka_duplicates: int = 0
    states_checked: int = 0

    shown: Counter[str] = field(default_factory=Counter)  # problems kept, per check

    def add(self, problem: str, check: str = "tables") -> None:
        """Keep up to 50 problems of each check: a run that loses many rows must
        still show what check_states or check_kafka found."""
        if self.shown[check] < 50:
            self.shown[check] += 1
            self.problems.append(problem)


def _outcome_times(entry: Entry, landed: Landed) -> list[dt.datetime | None]:
    """When each durable effect of the entry was committed (None: never)."""
    if entry.kind == "Malformed":
        return [landed.failed_at.get(entry.source)]
    if entry.poison is not None:
        return [landed.audit.get(Trace("DEAD_LETTER", entry.key, None, entry.entry_id))]
    return [landed.audit.get(trace) for trace in entry.traces]


def check_tables(entries: Sequence[Entry], landed: Landed, verdict: Verdict) -> None:
    """Final tables equal the reference; every entry left its trace, dead letter or failed entry."""
    for table, reference in landed.reference.items():
        ids = [row[0] for row in landed.tables[table]]
        if len(ids) != len(set(ids)):
            verdict.rows_duplicated += len(ids) - len(set(ids))
            verdict.add(f"{table}: a primary key appears twice")
        ours = Counter(map(repr, landed.tables[table]))  # rows hold dicts and lists
        expected = Counter(map(repr, reference))
        missing = expected - ours
        extra = ours - expected
        if missing or extra:
            verdict.rows_lost += sum(missing.values())
            verdict.rows_duplicated += sum(extra.values())
            verdict.add(
                f"{table}: {sum(missing.values())} reference rows missing or different, "
                f"{sum(extra.values())} rows the reference lacks; e.g. missing "
                f"{next(iter(missing), None)!r}, extra {next(iter(extra), None)!r}"
            )
    poison = {e.source: e for e in entries if e.poison is not None}
    for source, count in landed.dead_letters.items():
        if source not in poison:
            verdict.add(f"dead letter for {source} which PostgreSQL accepts")
        elif count > 1:
            verdict.dead_letter_duplicates += count - 1
            verdict.add(f"{count} dead letters for {source}")
    for source, entry in poison.items():
        error = landed.dead_letter_errors.get(source)
        if not error:
            verdict.rows_lost += 1
            verdict.add(f"poison entry {source} ({entry.poison}) not dead-lettered with a reason")
    verdict.failed_entry_duplicates += sum(landed.failed_entries.values()) - len(
        landed.failed_entries
    )
    for entry in entries:
        if entry.kind == "Malformed" and entry.source not in landed.failed_entries:
            verdict.rows_lost += 1
            verdict.add(f"malformed entry {entry.source} not in the failed-entries stream")
        elif entry.poison is None and entry.kind != "Malformed":
            never = [t for t in entry.traces if t not in landed.audit]
            if never:
                verdict.rows_lost += 1
                verdict.add(
                    f"entry {entry.index} {entry.kind} {entry.source}: never written {never}"
                )


def check_states(
    entries: Sequence[Entry],
    landed: Landed,
    states: Iterable[tuple[dt.datetime, Mapping[str, str]]],
    verdict: Verdict,
) -> None:
    """No STATE passed an entry whose effect was not committed when the STATE was read.

    `states`: each STATE the target emitted (its `stream_ids` bookmarks) with
    the time the harness read it. Every entry at or below a bookmark must have
    committed its trace (or dead letter, or failed entry) before that time.
    """
    by_key: dict[str, list[Entry]] = {}
    for entry in entries:
        by_key.setdefault(entry.key, []).append(entry)
    for seen_at, bookmarks in states:
        verdict.states_checked += 1
        for key, bookmark in bookmarks.items():
            ms, _, seq = bookmark.partition("-")
            limit = (int(ms), int(seq or 0))
            for entry in by_key.get(key, []):
                if entry.id_tuple > limit:
                    break
                times = _outcome_times(entry, landed)
                if any(t is None or t > seen_at for t in times):
                    verdict.add(
                        f"STATE {key}={bookmark} read at {seen_at:%H:%M:%S.%f} passed entry "
                        f"{entry.entry_id} ({entry.kind}, {entry.poison or 'ok'}) committed at {times}",
                        check="states",
                    )
                    break


def check_kafka(
    entries: Sequence[Entry],
    messages: Sequence[KafkaMessage],
    verdict: Verdict,
    *,
    expected: Iterable[Entry] | None = None,
) -> None:
    """Every publishable entry at least once; duplicates only of one source entry, same value.

    `expected`: the entries that must be in this broker (default: every
    publishable one); a restarted memory-only broker holds only what was
    published after its restart.
    """
    by_source = {e.source: e for e in entries}
    seen: dict[tuple[str, str], list[bytes]] = {}
    for message in messages:
        stream = message.headers.get("source_stream")
        entry_id = message.headers.get("source_entry_id")
        if stream is None or entry_id is None:
            verdict.add(f"Kafka message on {message.topic} without source headers", check="kafka")
            continue
        source = (stream.decode(), entry_id.decode())
        entry = by_source.get(source)
        if entry is None or not entry.publishable:
            verdict.add(f"Kafka message for {source}, which is no publishable entry", check="kafka")
            continue
        seen.setdefault(source, []).append(message.value)
    verdict.kafka_messages += len(messages)
    for source, values in seen.items():
        verdict.kafka_duplicates += len(values) - 1
        if len(set(values)) > 1:
            verdict.add(f"Kafka duplicates of {source} differ: {values[:2]!r}", check="kafka")
    wanted = [e for e in (expected if expected is not None else entries) if e.publishable]
    absent = [e for e in wanted if e.source not in seen]
    if absent:
        verdict.add(
            f"{len(absent)} publishable entries never reached Kafka, e.g. "
            + ", ".join(f"{e.source} ({e.kind} {e.table}, {e.poison or 'ok'})" for e in absent[:3]),
            check="kafka",
        )
