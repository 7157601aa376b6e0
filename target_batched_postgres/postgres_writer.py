"""PostgreSQL I/O: tables, one statement per batch, per-record fallback, dead letters.

Only this module talks to psycopg; driver errors are translated here into
`TransientError` (retry the whole batch), `RecordRejected` (this row's data is
bad) or `FatalError` (stop).
"""

from __future__ import annotations

import logging
import re
import select
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec
import psycopg
from psycopg import pq, sql
from psycopg.conninfo import conninfo_to_dict

from target_batched_postgres import control
from target_batched_postgres.dead_letter import DeadLetter, describe_source
from target_batched_postgres.errors import (
    ConfigError,
    FatalError,
    RecordRejected,
    TargetError,
    TransientError,
)
from target_batched_postgres.faults import fault_point
from target_batched_postgres.identifiers import fit_identifier
from target_batched_postgres.metrics import DrainerMetric, Metrics
from target_batched_postgres.pgtypes import ColumnType, Kind, type_for_schema, type_for_value
from target_batched_postgres.retry import RetryPolicy
from target_batched_postgres.signature import data_columns
from target_batched_postgres.sql import (
    COLUMNS_QUERY,
    HEAP_WARMUP_PAGE,
    HEAP_WARMUP_QUERY,
    OnConflict,
    build_add_column,
    build_create_dead_letter_source_index,
    build_create_dead_letter_table,
    build_create_schema,
    build_create_table,
    build_insert,
    build_insert_dead_letter,
    build_populate_insert,
)
from target_batched_postgres.surrogates import not_utf8
from target_batched_postgres.values import ENCODERS, to_json_bytes
from target_batched_postgres.where import WhereBuilder, build_delete, build_update

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 10
MAX_CACHED_PLANS = 4096
# SQLSTATE classes: the row's data is at fault -> fall back / dead-letter it.
_RECORD_CLASSES = ("22", "23", "21")
_RECORD_STATES = {"42804", "42P18", "2200N", "54000", "54001", "42703", "42883"}
# The server or the connection is at fault -> retry the batch.
_TRANSIENT_CLASSES = ("08", "40", "53", "57", "58")
_TRANSIENT_STATES = {"55P03"}  # lock_timeout: another session held the lock too long
# unique_violation, exclusion_violation: what ON CONFLICT DO NOTHING / DO UPDATE absorb.
_CONFLICT_STATES = {"23505", "23P01"}
_NO_CONFLICT_TARGET = "42P10"  # invalid_column_reference: no unique index for ON CONFLICT
# psycopg's placeholder syntax in a composed statement: `%%` is `%`, `%s` the parameter.
_PLACEHOLDER = re.compile(rb"%([%s])")


_UNPARSABLE_CONNINFO = (
    "database_url: libpq cannot parse it (its message, which quotes the URL and so "
    "its password, is not shown). Check the scheme (`postgresql://`, with the colon), "
    "percent-encode the reserved characters of the user name and password (`%` as "
    "%25, `@` as %40, `/` as %2F, `?` as %3F, `#` as %23, `:` as %3A), use only "
    "libpq's query parameters or key=value options, and close quoted values."
)


def _scrubbed(error: TargetError, secrets: Sequence[str]) -> TargetError:
    """The same kind of error with every secret replaced by `***`."""
    text = str(error)
    for secret in secrets:
        text = text.replace(secret, "***")
    if isinstance(error, RecordRejected):
        return RecordRejected(text, error.sqlstate)
    return type(error)(text)


class NoConflictTarget(FatalError):
    """ON CONFLICT names columns that no unique index of the table covers (42P10).

    A configuration problem (`on_conflict: upsert` with key properties that
    are not the table's key): `write` turns it into an error naming the table
    and the columns.
    """


def translate(exc: psycopg.Error) -> TargetError:
    """Map a psycopg error to what the caller should do about it."""
    state = exc.sqlstate or ""
    if state == _NO_CONFLICT_TARGET:
        return NoConflictTarget(f"PostgreSQL error {state}: {exc}".strip())
    if (
        state.startswith(_TRANSIENT_CLASSES)
        or state in _TRANSIENT_STATES
        or (isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and not state)
    ):
        return TransientError(f"{type(exc).__name__}: {exc}".strip())
    if state.startswith(_RECORD_CLASSES) or state in _RECORD_STATES:
        return RecordRejected(str(exc).strip(), state)
    if isinstance(exc, psycopg.DataError) and not state:
        # Raised by psycopg before sending, e.g. a NUL byte in a text value.
        return RecordRejected(str(exc).strip())
    return FatalError(f"PostgreSQL error {state or type(exc).__name__}: {exc}".strip())


@dataclass
class TableSpec:
    """What the SCHEMA says about a destination table."""

    name: str
    properties: dict[str, Any] = field(default_factory=dict)
    key_properties: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class WriteResult:
    written: int
    dead_lettered: int
    fallback_used: bool


@dataclass(frozen=True, slots=True)
class ChangeResult:
    """An applied update/delete: rows it matched, or dead-lettered instead."""

    rows: int
    dead_lettered: bool


class PostgresWriter:
    """Writes batches of same-signature records into PostgreSQL tables."""

    def __init__(
        self,
        conninfo: str,
        schema: str,
        *,
        dead_letter_table: str,
        on_conflict: OnConflict,
        fail_on_record_error: bool,
        retry: RetryPolicy,
        metrics: Metrics,
        statement_timeout_seconds: float = 0.0,
        heap_warmup_mib: int = 0,
    ) -> None:
        self._conninfo = conninfo
        self._statement_timeout_ms = int(statement_timeout_seconds * 1000)
        self._heap_warmup_pages = heap_warmup_mib * 1024 * 1024 // HEAP_WARMUP_PAGE
        self.schema = schema
        self._dead_letter_table = dead_letter_table
        self._on_conflict = on_conflict
        self._fail_on_record_error = fail_on_record_error
        self._retry = retry
        self._metrics = metrics
        self._conn: psycopg.Connection[Any] | None = None
        self._columns: dict[str, dict[str, ColumnType]] = {}
        self._defaulted: dict[str, set[str]] = {}  # columns not NULL when left out
        self._plans: dict[tuple[Any, ...], InsertPlan] = {}
        # (table, keys) -> the plan its last write used, for encode_ahead
        self._signature_plans: dict[tuple[str, tuple[str, ...]], InsertPlan] = {}
        self._conflicts = ConflictBackoff()
        self._prepared = False
        self._in_flight: deque[InFlight] = deque()  # sent in pipeline mode, oldest first

    # -- connection -------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        if self._in_flight:
            self._settle()  # the connection leaves pipeline mode before anything else
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._columns.clear()
            secrets = self._conninfo_secrets()
            # Bounded waits: a statement or a lock wait longer than the timeout
            # is cancelled (57014, 55P03) and retried like a lost connection.
            limit = self._statement_timeout_ms
            try:
                conn = psycopg.connect(
                    self._conninfo,
                    connect_timeout=CONNECT_TIMEOUT_SECONDS,
                    autocommit=True,  # transactions are explicit: conn.transaction()
                    application_name="target-batched-postgres",
                    options=f"-c TimeZone=UTC -c statement_timeout={limit} -c lock_timeout={limit}",
                    # A server gone without closing the connection (host down,
                    # network cut) is noticed in about a minute, not never.
                    keepalives=1,
                    keepalives_idle=30,
                    keepalives_interval=10,
                    keepalives_count=3,
                )
            except psycopg.Error as exc:
                # Down or restarting: retried with backoff, like a connection lost mid-batch.
                error = translate(exc)
                if any(secret in str(error) for secret in secrets):
                    # libpq quoted a value holding the password: neither it nor
                    # the chained driver error may reach a log line.
                    raise _scrubbed(error, secrets) from None
                raise error from exc
            if self._heap_warmup_pages:
                # Without it, glibc returns a large statement's heap to the
                # kernel when the statement ends and the next one faults every
                # page in again: about a quarter of the server's CPU on W1.
                try:
                    conn.execute(HEAP_WARMUP_QUERY, (HEAP_WARMUP_PAGE, self._heap_warmup_pages))
                except psycopg.Error as exc:
                    conn.close()
                    raise translate(exc) from exc
            self._conn = conn
        return self._conn

    def _conninfo_secrets(self) -> tuple[str, ...]:
        """The password in `database_url`; ConfigError when libpq cannot parse the URL.

        libpq's parse errors quote the connection string (`missing "=" after
        "postgresql//user:pw@..."`, `invalid percent-encoded token: "pw%zz"`),
        so the error raised here names the setting and the likely causes but
        carries none of libpq's text, and does not chain the driver's error.
        """
        try:
            params = conninfo_to_dict(self._conninfo)
        except psycopg.Error:
            raise ConfigError(_UNPARSABLE_CONNINFO) from None
        password = params.get("password")
        return (str(password),) if password else ()

    def close(self) -> None:
        self._in_flight.clear()
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None

    def _execute(self, statement: sql.Composed, params: Sequence[Any] | None = None) -> int:
        conn = self._connect()
        try:
            # Always parsed for placeholders, even DDL: see sql.Identifier.
            cursor = conn.execute(statement, params if params is not None else ())
        except psycopg.Error as exc:
            raise translate(exc) from exc
        except UnicodeEncodeError as exc:  # a lone surrogate in a parameter: see surrogates.py
            raise not_utf8(exc) from exc
        self._metrics.increment(DrainerMetric.SQL_STATEMENTS)
        return cursor.rowcount

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """A transaction (or a savepoint inside one); driver errors are translated."""
        conn = self._connect()
        try:
            with conn.transaction():
                yield
        except psycopg.Error as exc:
            raise translate(exc) from exc

    def preflight(self) -> None:
        """Connect, check privileges, create the schema and the dead-letter table.

        The target runs it before any input is read, so a bad URL or missing
        privileges fail fast; a writer used without it prepares on first write.
        """
        if self._prepared:
            return
        try:
            self._retry.run(self._preflight_once, what="PostgreSQL preflight", attempts=1)
        except ConfigError:
            raise  # already names the setting (and must not be chained: see _conninfo_secrets)
        except TargetError as exc:
            raise ConfigError(
                f"database_url: cannot prepare PostgreSQL schema {self.schema!r}: {exc}"
            ) from exc

    def _preflight_once(self) -> None:
        try:
            self._connect()
        except psycopg.Error as exc:
            raise TransientError(f"cannot connect: {exc}".strip()) from exc
        with self._transaction():
            self._execute(build_create_schema(self.schema))
            self._execute(build_create_dead_letter_table(self.schema, self._dead_letter_table))
        try:
            with self._transaction():
                index = build_create_dead_letter_source_index(self.schema, self._dead_letter_table)
                self._execute(index)
        except RecordRejected as exc:  # an older table already holds duplicates
            logger.warning(
                "Dead-letter table %r keeps no unique source entry (%s): an entry replayed "
                "after a crash that fails again is dead-lettered again",
                self._dead_letter_table,
                exc,
            )
        self._prepared = True

    # -- tables -----------------------------------------------------------------

    def _table_columns(self, table: str) -> dict[str, ColumnType]:
        self.preflight()
        if table not in self._columns:
            try:
                cursor = self._connect().execute(COLUMNS_QUERY, (self.schema, table))
            except psycopg.Error as exc:
                raise translate(exc) from exc
            found = cursor.fetchall()
            self._columns[table] = {
                name: ColumnType.from_catalog(nsp, typ, cat) for name, nsp, typ, cat, _ in found
            }
            self._defaulted[table] = {name for name, *_, defaulted in found if defaulted}
        return self._columns[table]

    def _ensure_columns(
        self, spec: TableSpec, columns: Mapping[str, str], sample: Sequence[Mapping[str, Any]]
    ) -> dict[str, ColumnType]:
        """Create the table, or add the columns it lacks; return its column types.

        `columns` maps record keys to column names. Types come from the SCHEMA
        where it declares the property, else from the first non-null value.
        An existing column's own type is never changed.
        """
        existing = self._table_columns(spec.name)
        missing = _missing_columns(spec, columns, existing)
        if not missing:
            return existing

        def new_type(key: str) -> ColumnType:
            if key in spec.properties:
                return type_for_schema(spec.properties[key])
            value = next((r[key] for r in sample if r.get(key) is not None), None)
            return type_for_value(value)

        with self._transaction():
            if not existing:
                pk = [column_name(k) for k in spec.key_properties]
                defs = [(col, new_type(key)) for key, col in missing.items()]
                self._execute(build_create_table(self.schema, spec.name, defs, pk))
            else:
                for key, col in missing.items():
                    self._execute(build_add_column(self.schema, spec.name, col, new_type(key)))
        self._columns.pop(spec.name, None)
        return self._table_columns(spec.name)

    # -- writes -----------------------------------------------------------------

    def write_parts(
        self,
        spec: TableSpec,
        parts: Sequence[tuple[Sequence[str], Sequence[Mapping[str, Any]]]],
        encoded: Sequence[Encoded | None] | None = None,
    ) -> WriteResult:
        """Batches of one table, (keys, records) in order: in one statement when they can share it.

        Batches of one signature always can. Batches of different signatures
        can when the statement over all their columns writes what each batch's
        own would: every column some batch leaves out has no default (so NULL
        is what leaving it out gives too) and on_conflict is not `upsert`
        (whose update would set the left-out columns). Otherwise each batch is
        written on its own, in order.

        `encoded`: each part's `encode_ahead`, when the caller made them.
        """
        ahead: Sequence[Encoded | None] = encoded or [None] * len(parts)
        if len(parts) == 1:
            return self.write(spec, *parts[0], encoded=ahead[0])
        records = [record for _, batch in parts for record in batch]
        first = tuple(parts[0][0])
        if all(tuple(keys) == first for keys, _ in parts):
            return self.write(spec, first, records, encoded=_joined(ahead))
        union = _union_keys(parts)
        shared = self._retry.run(
            lambda: self._can_share(spec, union, parts, records),
            what=f"columns of {spec.name!r}",
        )
        if shared:
            return self.write(spec, union, records)
        results = [
            self.write(spec, keys, batch, encoded=e)
            for (keys, batch), e in zip(parts, ahead, strict=True)
        ]
        return WriteResult(
            sum(r.written for r in results),
            sum(r.dead_lettered for r in results),
            any(r.fallback_used for r in results),
        )

    def _can_share(
        self,
        spec: TableSpec,
        union: Sequence[str],
        parts: Sequence[tuple[Sequence[str], Sequence[Mapping[str, Any]]]],
        records: Sequence[Mapping[str, Any]],
    ) -> bool:
        if self._on_conflict is OnConflict.UPSERT:
            return False
        # The columns each batch would add, added now (as the first of them would).
        self._ensure_columns(spec, {key: column_name(key) for key in union}, records)
        return self._shareable(spec, union, parts)

    def _shareable(
        self,
        spec: TableSpec,
        union: Sequence[str],
        parts: Sequence[tuple[Sequence[str], Sequence[Mapping[str, Any]]]],
    ) -> bool:
        """Whether no column some batch leaves out has a default (so NULL is what it gets)."""
        defaulted = self._defaulted.get(spec.name, set())
        for keys, _ in parts:
            left_out = set(union).difference(keys)
            if any(column_name(key) in defaulted for key in left_out):
                return False
        return True

    def write(
        self,
        spec: TableSpec,
        keys: Sequence[str],
        records: Sequence[Mapping[str, Any]],
        *,
        encoded: Encoded | None = None,
    ) -> WriteResult:
        """Write same-signature records: one statement, else one savepoint each.

        Transient errors retry the whole write (in a new transaction) with
        backoff; records still failing alone are dead-lettered (or stop the run).
        `encoded` is the records' `encode_ahead`, if made.
        """
        try:
            return self._retry.run(
                lambda: self._write_once(spec, keys, records, encoded),
                what=f"write to {spec.name!r}",
            )
        except NoConflictTarget as exc:
            raise FatalError(self._no_conflict_target(spec)) from exc

    def _no_conflict_target(self, spec: TableSpec) -> str:
        """What an upsert's 42P10 means for this table, and what to do about it."""
        keys = [column_name(k) for k in spec.key_properties]
        table = f"{self.schema}.{spec.name}"
        # Shown to the operator, never run: quoted as every statement is.
        create = (
            sql.SQL("CREATE UNIQUE INDEX ON {} ({})")
            .format(
                sql.Identifier(self.schema, spec.name),
                sql.SQL(", ").join(map(sql.Identifier, keys)),
            )
            .as_string()
        )
        return (
            f"on_conflict=upsert: table {table!r} has no primary key or unique index on "
            f"exactly the stream's key_properties {keys}, which the upsert's ON CONFLICT "
            f"names (PostgreSQL error 42P10). Create one ({create}), make the stream's "
            "key_properties match the table's key, or set on_conflict to do_nothing or error."
        )

    def encode_ahead(
        self, table: str, keys: Sequence[str], records: Sequence[Mapping[str, Any]]
    ) -> Encoded | None:
        """The batch's statement parameter, encoded by the thread that formed the batch.

        The writer thread spends its time waiting on PostgreSQL, and the server
        sits idle while that thread encodes the next batch (about 7% of a W1
        run). A batch encoded ahead is written with this parameter when the
        write uses the plan it was encoded for (same table, columns and column
        types); otherwise the write encodes it again. None when there is no
        plan yet for these columns, when the batch takes the cast form, or
        with `on_conflict: upsert` (its rows are deduplicated first).
        Thread-safe: it only reads the plan cache.
        """
        if self._on_conflict is OnConflict.UPSERT:
            return None
        plan = self._signature_plans.get((table, tuple(keys)))
        if plan is None or not plan.populate:
            return None
        try:
            param = plan.encode.populate(records)
        except UnicodeEncodeError:  # a lone surrogate: the write refuses the record
            return None
        return None if param is None else Encoded(plan, param)

    def _write_once(
        self,
        spec: TableSpec,
        keys: Sequence[str],
        records: Sequence[Mapping[str, Any]],
        encoded: Encoded | None = None,
    ) -> WriteResult:
        columns = {key: column_name(key) for key in keys}
        types = self._ensure_columns(spec, columns, records)
        plan = self._signature_plan(spec, keys, columns, types)
        pk = [column_name(k) for k in spec.key_properties]
        rows = _dedupe_by_key(records, spec.key_properties) if self._upserting(pk) else records
        param = None
        if encoded is not None and encoded.plan is plan and rows is records:
            param = encoded.param
        try:
            self._insert_batch(spec.name, plan, rows, param)
            return WriteResult(len(records), 0, fallback_used=False)
        except RecordRejected as batch_error:
            if len(rows) == 1:
                with self._transaction():
                    self._dead_letter_all(
                        [DeadLetter(spec.name, rows[0], str(batch_error), batch_error.sqlstate)]
                    )
                return WriteResult(0, 1, fallback_used=False)
            logger.warning(
                "Batch of %d rows for %r failed (%s); writing row by row.",
                len(rows),
                spec.name,
                batch_error,
            )
        # The rows that pass and the dead letters of those that fail commit together.
        with self._transaction():
            failed = self._fallback(plan, spec.name, rows)
            self._dead_letter_all(failed)
        return WriteResult(len(rows) - len(failed), len(failed), fallback_used=True)

    def _signature_plan(
        self,
        spec: TableSpec,
        keys: Sequence[str],
        columns: Mapping[str, str],
        types: Mapping[str, ColumnType],
    ) -> InsertPlan:
        """The plan for these keys, remembered as the signature's (see `encode_ahead`)."""
        names = tuple(columns[k] for k in keys)
        plan = self._insert_plan(spec, tuple(keys), names, types)
        signature = (spec.name, tuple(keys))
        if self._signature_plans.get(signature) is not plan:
            if len(self._signature_plans) >= MAX_CACHED_PLANS:
                self._signature_plans.clear()
            self._signature_plans[signature] = plan
        return plan

    # -- pipelined batch inserts ---------------------------------------------------

    def send(
        self,
        spec: TableSpec,
        parts: Sequence[tuple[Sequence[str], Sequence[Mapping[str, Any]]]],
        encoded: Sequence[Encoded | None],
    ) -> InFlight | None:
        """Send the batches' insert without waiting for its result; None to `write_parts` instead.

        The statement goes in libpq's pipeline mode, followed by its own Sync:
        it is one statement in autocommit, atomic on its own, exactly as
        `write` sends it, but the writer can send the next one while the
        server still executes this one (the server runs them in the order
        sent). `finish` takes the results in the same order. A statement that
        failed is written again by `write` once the ones sent after it have
        finished: its retries, row-by-row fallback and dead letters are
        `write`'s.

        Only the common case goes this way: batches whose columns exist and
        that share one statement in `write_parts` (one signature, or several
        when no left-out column has a default), with `on_conflict` other than
        `upsert`, and whose keys meet no key of a statement in flight for the
        same table (a failed statement written again after a later one must
        not change which write of a key wins). The statement is the one
        `_insert` would execute: the populate form when it can, else the cast
        form.
        """
        conn = self._conn
        if self._on_conflict is OnConflict.UPSERT or conn is None or conn.closed or conn.broken:
            return None
        keys = tuple(parts[0][0])
        one_signature = all(tuple(other) == keys for other, _ in parts[1:])
        if not one_signature:  # one statement over all their columns, as write_parts does
            keys = _union_keys(parts)
        existing = self._columns.get(spec.name)
        columns = {key: column_name(key) for key in keys}
        if existing is None or _missing_columns(spec, columns, existing):
            return None  # the write must create or alter the table first
        if not one_signature and not self._shareable(spec, keys, parts):
            return None
        plan = self._signature_plan(spec, keys, columns, existing)
        ahead = None
        if one_signature:
            ahead = _joined(encoded) if len(parts) > 1 else encoded[0]
        records = [r for _, batch in parts for r in batch] if len(parts) > 1 else parts[0][1]
        try:
            populate, param = plan.parameter(
                records, ahead.param if ahead is not None and ahead.plan is plan else None
            )
        except UnicodeEncodeError:  # a lone surrogate: `write` refuses the record
            return None
        if not isinstance(param, str):
            return None  # no columns: the parameter is a row count
        sent = InFlight(spec, keys, records, Encoded(plan, param) if populate else None)
        sent.populate = populate
        for other in self._in_flight:
            if other.spec.name == spec.name and not sent.keys_disjoint(other):
                return None
        try:
            data = param.encode(conn.info.encoding)
        except UnicodeError:
            return None
        plain = self._on_conflict is OnConflict.ERROR or self._conflicts.should_try(spec.name)
        sent.plain = plain
        try:
            pgconn = conn.pgconn
            if pgconn.pipeline_status == pq.PipelineStatus.OFF:
                pgconn.enter_pipeline_mode()
            self._in_flight.append(sent)
            query = plan.pipelined(populate, plain, conn)
            pgconn.send_query_params(query, [data], [0], [0])
            pgconn.pipeline_sync()
            _flush(pgconn)
        except psycopg.Error as exc:
            self._lost(translate(exc))
        fault_point("after_pg_send")
        return sent

    def ready(self, sent: InFlight, timeout: float) -> bool:
        """Whether `sent`'s result (the oldest in flight) has come, waiting up to `timeout` s."""
        if sent.outcome is not _PENDING or self._conn is None:
            return True
        pgconn = self._conn.pgconn
        try:
            pgconn.consume_input()
            if pgconn.is_busy() and _wait(pgconn, select.POLLIN, timeout):
                pgconn.consume_input()
            return not pgconn.is_busy()
        except psycopg.Error:
            return True  # finish tells what happened

    def finish(self, sent: InFlight) -> WriteResult:
        """The result of a statement `send` sent, taken in the order they were sent.

        A statement that failed is written again by `write` (retried, or row
        by row with dead letters), after the statements in flight behind it
        have been read.
        """
        self._take_oldest(sent)
        table = sent.spec.name
        if sent.outcome is None:
            self._metrics.increment(DrainerMetric.SQL_STATEMENTS)
            self._metrics.increment(DrainerMetric.INSERT_STATEMENTS)
            if sent.plain and self._on_conflict is not OnConflict.ERROR:
                self._conflicts.succeeded(table)
            return WriteResult(len(sent.records), 0, fallback_used=False)
        conflict = isinstance(sent.outcome, RecordRejected) and (
            sent.outcome.sqlstate in _CONFLICT_STATES
        )
        if conflict and sent.plain and self._on_conflict is not OnConflict.ERROR:
            self._conflicts.failed(table)  # written again with the clause, as _insert_batch does
        logger.debug(
            "Pipelined batch for %r failed (%s); writing it again", sent.spec.name, sent.outcome
        )
        return self.write(sent.spec, sent.keys, sent.records, encoded=sent.encoded)

    def abandon(self, sent: InFlight) -> None:
        """Read and drop the result of the oldest statement in flight (the run is stopping)."""
        self._take_oldest(sent)

    def _take_oldest(self, sent: InFlight) -> None:
        """Read `sent`'s result (it must be the oldest in flight) and stop tracking it."""
        if not self._in_flight or self._in_flight[0] is not sent:
            raise RuntimeError("statements sent in pipeline mode finish in the order sent")
        if sent.outcome is _PENDING:
            self._read_result(sent)
        self._in_flight.popleft()
        if not self._in_flight:
            self._leave_pipeline()

    def _settle(self) -> None:
        """Read every statement in flight (outcomes kept for `finish`); leave pipeline mode."""
        for sent in self._in_flight:
            if sent.outcome is _PENDING:
                self._read_result(sent)
        self._leave_pipeline()

    def _leave_pipeline(self) -> None:
        conn = self._conn
        off = pq.PipelineStatus.OFF
        if conn is not None and not conn.closed and conn.pgconn.pipeline_status != off:
            conn.pgconn.exit_pipeline_mode()

    def _read_result(self, sent: InFlight) -> None:
        """Read `sent`'s results up to its Sync; its outcome is None or the translated error."""
        assert self._conn is not None
        pgconn = self._conn.pgconn
        error: TargetError | None = None
        try:
            while True:
                while pgconn.is_busy():
                    _wait(pgconn, select.POLLIN)
                    pgconn.consume_input()
                result = pgconn.get_result()
                if result is None:
                    if pgconn.status == pq.ConnStatus.BAD:
                        # Lost between results (an immediate shutdown, say):
                        # libpq reports the error once, then only None,
                        # never the Sync, and raises nothing.
                        message = pgconn.get_error_message()
                        raise psycopg.OperationalError(message.strip() or "the connection was lost")
                    continue  # between the results of two statements
                status = result.status
                if status == pq.ExecStatus.PIPELINE_SYNC:
                    break
                if status == pq.ExecStatus.FATAL_ERROR and error is None:
                    exc = psycopg.errors.error_from_result(
                        result, encoding=self._conn.info.encoding
                    )
                    error = translate(exc)
        except psycopg.Error as exc:
            self._lost(translate(exc))
            return
        sent.outcome = error

    def _lost(self, error: TargetError) -> None:
        """The connection failed with statements in flight: each is in doubt, written again."""
        for sent in self._in_flight:
            if sent.outcome is _PENDING:
                sent.outcome = error
        if self._conn is not None:
            self._conn.close()  # a new one is made for the writes again

    def _insert_plan(
        self,
        spec: TableSpec,
        keys: tuple[str, ...],
        names: tuple[str, ...],
        types: Mapping[str, ColumnType],
    ) -> InsertPlan:
        """The signature's INSERT statements and row encoder, built once per column types."""
        column_types = tuple(types[n] for n in names)
        cache_key = (spec.name, keys, column_types)
        plan = self._plans.get(cache_key)
        if plan is None:
            pk = [column_name(k) for k in spec.key_properties]
            populate = all(ct.schema == "pg_catalog" for ct in column_types)
            statements: dict[tuple[bool, bool], sql.Composed] = {}
            # (populate form?, without ON CONFLICT?) -> statement
            for plain in {self._on_conflict is OnConflict.ERROR, True}:
                on_conflict = OnConflict.ERROR if plain else self._on_conflict
                statements[(False, plain)] = build_insert(
                    self.schema, spec.name, names, column_types,
                    on_conflict=on_conflict, key_columns=pk,
                )  # fmt: skip
                if populate:
                    statements[(True, plain)] = build_populate_insert(
                        self.schema, spec.name, names, on_conflict=on_conflict, key_columns=pk
                    )
            # Columns named like control properties the rows carry but do not
            # insert: json_populate_recordset would still read those values.
            shadowed = bool((control.CONTROL_PROPERTIES & types.keys()) - set(names))
            encode = RowEncoder(keys, names, column_types, rebuild=shadowed)
            plan = InsertPlan(statements, populate, encode)
            if len(self._plans) >= MAX_CACHED_PLANS:
                self._plans.clear()
            self._plans[cache_key] = plan
        return plan

    def apply_change(self, spec: TableSpec, record: Mapping[str, Any]) -> ChangeResult:
        """Apply one update or delete (`_sdc_operation`, `_sdc_where`) in its own transaction.

        A change PostgreSQL rejects for its data (bad value, unknown column,
        malformed where clause) is dead-lettered like an insert; transient
        errors retry with backoff.
        """
        return self._retry.run(
            lambda: self._apply_change_once(spec, record), what=f"change to {spec.name!r}"
        )

    def _apply_change_once(self, spec: TableSpec, record: Mapping[str, Any]) -> ChangeResult:
        keys = data_columns(record) if record.get(control.OPERATION) == "update" else ()
        columns = {key: column_name(key) for key in keys}
        types = self._ensure_columns(spec, columns, [record])
        try:
            try:
                statement, params = self._change_statement(spec, record, keys, types)
            except UnicodeEncodeError as exc:  # a lone surrogate: see surrogates.py
                raise not_utf8(exc) from exc
            rows = self._execute(statement, params)  # one statement: atomic in autocommit
        except RecordRejected as exc:
            letter = DeadLetter(spec.name, record, str(exc), exc.sqlstate)
            with self._transaction():
                self._dead_letter_all([letter])
            return ChangeResult(0, dead_lettered=True)
        return ChangeResult(rows, dead_lettered=False)

    def _change_statement(
        self,
        spec: TableSpec,
        record: Mapping[str, Any],
        keys: Sequence[str],
        types: Mapping[str, ColumnType],
    ) -> tuple[sql.Composed, list[Any]]:
        """UPDATE or DELETE with its parameters; RecordRejected when the change is malformed."""
        condition, where_params = WhereBuilder(types, column_name).build(record.get(control.WHERE))
        if record.get(control.OPERATION) == "delete":
            return build_delete(self.schema, spec.name, condition), where_params
        if not keys:
            raise RecordRejected("update sets no column")
        set_columns = [(column_name(k), types[column_name(k)]) for k in keys]
        set_params = [
            ENCODERS[ct.kind](record.get(k)) for k, (_, ct) in zip(keys, set_columns, strict=True)
        ]
        statement = build_update(self.schema, spec.name, set_columns, condition)
        return statement, [*set_params, *where_params]

    def _upserting(self, pk: Sequence[str]) -> bool:
        return self._on_conflict is OnConflict.UPSERT and bool(pk)

    def _insert_batch(
        self,
        table: str,
        plan: InsertPlan,
        rows: Sequence[Mapping[str, Any]],
        param: str | None = None,
    ) -> None:
        """The batch in one statement, in autocommit: atomic on its own, one round trip.

        While a table's batches meet no existing key, the statement goes
        without its ON CONFLICT clause: PostgreSQL then inserts without the
        speculative-insertion steps, 10-25% faster, and the result is the same.
        A batch that does meet a key (a replay after a crash, an upsert of an
        existing row, a key twice in the batch) fails as a whole with nothing
        written and is sent again with the clause; see ConflictBackoff for when
        the table tries without it again.
        """
        if self._on_conflict is not OnConflict.ERROR and self._conflicts.should_try(table):
            try:
                self._insert(plan, rows, plain=True, param=param)
            except RecordRejected as exc:
                if exc.sqlstate not in _CONFLICT_STATES:
                    raise  # not about keys: the clause would not help
                skip = self._conflicts.failed(table)
                logger.debug(
                    "Batch of %d rows for %r meets existing keys; with ON CONFLICT it goes, "
                    "as do the next %d batches",
                    len(rows),
                    table,
                    skip,
                )
            else:
                self._conflicts.succeeded(table)
                return
        self._insert(plan, rows, param=param)

    def _insert(
        self,
        plan: InsertPlan,
        rows: Sequence[Mapping[str, Any]],
        *,
        plain: bool = False,
        param: str | None = None,
    ) -> None:
        """`param`: the rows' populate-form parameter, when encoded ahead."""
        plain = plain or self._on_conflict is OnConflict.ERROR
        try:
            populate, parameter = plan.parameter(rows, param)
        except UnicodeEncodeError as exc:  # a lone surrogate: see surrogates.py
            raise not_utf8(exc) from exc
        self._execute(plan.statements[(populate, plain)], [parameter])
        self._metrics.increment(DrainerMetric.INSERT_STATEMENTS)

    def _fallback(
        self, plan: InsertPlan, table: str, rows: Sequence[Mapping[str, Any]]
    ) -> list[DeadLetter]:
        """Write each row in its own savepoint; return the rows that still fail."""
        failed: list[DeadLetter] = []
        for row in rows:
            try:
                with self._transaction():
                    self._insert(plan, [row])
            except RecordRejected as exc:
                failed.append(DeadLetter(table, row, str(exc), exc.sqlstate))
            fault_point("during_fallback")
        return failed

    def _dead_letter_all(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        if self._fail_on_record_error:
            first = letters[0]
            raise FatalError(
                f"record rejected by PostgreSQL (on_record_error=fail): table {first.table!r}, "
                f"{describe_source(first.record)}: {first.error}"
            )
        statement = build_insert_dead_letter(self.schema, self._dead_letter_table)
        for letter in letters:
            logger.error(
                "Dead-lettering a record of %r (%s): %s",
                letter.table,
                describe_source(letter.record),
                letter.reason,
            )
            self._execute(statement, letter.params())
        fault_point("before_pg_commit")  # every caller holds a transaction open here


@dataclass(frozen=True, slots=True)
class InsertPlan:
    """A signature's batch statements, by (populate form?, without ON CONFLICT?).

    The populate form (`build_populate_insert`) when the table's column types
    allow it and the batch too (`RowEncoder.populate`), else `build_insert`.
    """

    statements: dict[tuple[bool, bool], sql.Composed]
    populate: bool
    encode: RowEncoder
    _pipelined: dict[tuple[bool, bool], bytes] = field(default_factory=dict)

    def parameter(
        self, rows: Sequence[Mapping[str, Any]], ahead: str | None = None
    ) -> tuple[bool, Any]:
        """(populate form?, the statement's parameter) for these rows: the populate
        form when the plan and the rows allow it (`ahead`: its parameter, if made)."""
        if ahead is None and self.populate:
            ahead = self.encode.populate(rows)
        if ahead is not None:
            return True, ahead
        return False, self.encode(rows)

    def pipelined(self, populate: bool, plain: bool, conn: psycopg.Connection[Any]) -> bytes:
        """A statement as libpq takes it: `$1` for the parameter, `%` as `%`."""
        query = self._pipelined.get((populate, plain))
        if query is None:
            text = self.statements[(populate, plain)].as_bytes(conn)
            query = _PLACEHOLDER.sub(lambda m: b"$1" if m[1] == b"s" else b"%", text)
            self._pipelined[(populate, plain)] = query
        return query


_PENDING: Any = object()


class InFlight:
    """A batch insert `PostgresWriter.send` sent, until `finish` takes its result."""

    __slots__ = (
        "_key_values",
        "encoded",
        "keys",
        "outcome",
        "plain",
        "populate",
        "records",
        "spec",
    )

    def __init__(
        self,
        spec: TableSpec,
        keys: tuple[str, ...],
        records: Sequence[Mapping[str, Any]],
        encoded: Encoded | None,
    ) -> None:
        self.spec = spec
        self.keys = keys
        self.records = records
        self.encoded = encoded  # the populate form's parameter, for `write` if sent again
        self.plain = False
        self.populate = False
        self.outcome: TargetError | None = _PENDING  # None: committed
        self._key_values: set[Any] | None = None

    def keys_disjoint(self, other: InFlight) -> bool:
        """Whether no record of the two has the same key (no key properties: always)."""
        pk = self.spec.key_properties
        if not pk or list(other.spec.key_properties) != list(pk):
            return not pk and not other.spec.key_properties
        return self.key_values().isdisjoint(other.key_values())

    def key_values(self) -> set[Any]:
        """The records' keys, compared loosely (a key PostgreSQL may read as the same
        value, such as `1` and `"1"` or a uuid in either case, compares equal)."""
        if self._key_values is None:
            pk = self.spec.key_properties
            if len(pk) == 1:
                self._key_values = {_loose(r.get(pk[0])) for r in self.records}
            else:
                self._key_values = {tuple(_loose(r.get(k)) for k in pk) for r in self.records}
        return self._key_values


def _loose(value: Any) -> Any:
    if type(value) is str:
        return value.strip().lower()
    if value is None or type(value) is bool:
        return value
    return str(value).strip().lower()


def _flush(pgconn: Any) -> None:
    """Send what libpq buffered; read what the server sends meanwhile (it may wait for us)."""
    while pgconn.flush():
        if _wait(pgconn, select.POLLIN | select.POLLOUT) & select.POLLIN:
            pgconn.consume_input()


def _wait(pgconn: Any, events: int, timeout: float | None = None) -> int:
    """Wait (the GIL released) until the connection's socket is ready; the events that came.

    A hang-up or error counts as readable: libpq then reports what happened.
    """
    poller = select.poll()
    poller.register(pgconn.socket, events)
    ready = poller.poll(None if timeout is None else timeout * 1000)
    came = 0
    for _, event in ready:
        came |= event
    if came & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
        came |= select.POLLIN
    return came


def _union_keys(parts: Sequence[tuple[Sequence[str], Any]]) -> tuple[str, ...]:
    """The keys of all the batches, in first-seen order: one statement's columns."""
    return tuple(dict.fromkeys(key for keys, _ in parts for key in keys))


def _missing_columns(
    spec: TableSpec, columns: Mapping[str, str], existing: Mapping[str, Any]
) -> dict[str, str]:
    """Record keys -> column names the table lacks: the SCHEMA's properties, then `columns`."""
    wanted = {
        prop: column_name(prop)
        for prop in spec.properties
        if prop not in control.CONTROL_PROPERTIES
    }
    wanted.update(columns)
    return {key: col for key, col in wanted.items() if col not in existing}


class Encoded(NamedTuple):
    """A batch's populate-form parameter (a JSON array of rows) and the plan it is for."""

    plan: InsertPlan
    param: str


def _joined(parts: Sequence[Encoded | None]) -> Encoded | None:
    """Consecutive batches' parameters as one, when all were encoded ahead for one plan."""
    first = parts[0]
    if first is None or any(p is None or p.plan is not first.plan for p in parts):
        return None
    bodies = [p.param[1:-1] for p in parts if p is not None and p.param != "[]"]
    return Encoded(first.plan, "[" + ",".join(bodies) + "]")


class ConflictBackoff:
    """When a table's batches go without ON CONFLICT first.

    Every batch does, until one meets an existing key (typically a replay
    after a crash, or upserts of existing rows). The table's next batch then
    goes with the clause at once, and each further miss doubles the number of
    batches that do, up to MAX_SKIP; a batch that succeeds without the clause
    starts over. New rows pay nothing; a table of conflicts wastes one failed
    statement in MAX_SKIP batches.
    """

    MAX_SKIP = 1024

    def __init__(self) -> None:
        self._skip: dict[str, int] = {}  # table -> batches still to send with the clause
        self._next: dict[str, int] = {}  # table -> batches to skip after the next miss

    def should_try(self, table: str) -> bool:
        left = self._skip.get(table, 0)
        if left:
            self._skip[table] = left - 1
            return False
        return True

    def failed(self, table: str) -> int:
        """A batch met existing keys; return how many next batches go with the clause."""
        skip = self._next.get(table, 1)
        self._skip[table] = skip
        self._next[table] = min(skip * 2, self.MAX_SKIP)
        return skip

    def succeeded(self, table: str) -> None:
        self._next.pop(table, None)


def _embedded_json(text: str) -> msgspec.Raw | None:
    """A string bound for a json/jsonb column, as the JSON it holds; None when it holds none."""
    try:
        msgspec.json.decode(text)
    except (msgspec.DecodeError, RecursionError):
        return None
    return msgspec.Raw(text.encode())


class RowEncoder:
    """The batch parameter of `build_insert` and `build_populate_insert`: a JSON array of rows.

    Records whose keys are their column names are encoded as they are (one C
    call for the whole batch; other keys are ignored), flat lists included.
    Otherwise (a renamed column, a string in a json column, or for
    `build_insert` a nested list, which becomes a multi-dimensional array)
    each row is rebuilt with column-name keys.
    """

    def __init__(
        self,
        keys: Sequence[str],
        names: Sequence[str],
        types: Sequence[ColumnType],
        *,
        rebuild: bool = False,
    ) -> None:
        self._keys = list(keys)
        self._plan = [
            (key, name, ENCODERS[Kind.ARRAY] if ct.kind is Kind.ARRAY else None)
            for key, name, ct in zip(keys, names, types, strict=True)
        ]
        self._renamed = rebuild or any(key != name for key, name, _ in self._plan)
        self._array_keys = [key for key, _, enc in self._plan if enc is not None]
        # (key, column, jsonb?) of json and jsonb columns
        self._json = [
            (key, name, ct.name == "jsonb")
            for key, name, ct in zip(keys, names, types, strict=True)
            if ct.kind is Kind.JSON
        ]

    def populate(self, rows: Sequence[Mapping[str, Any]]) -> str | None:
        """For `build_populate_insert`; None when the batch must take `build_insert`.

        That is when a jsonb column holds a string that is not JSON (the cast
        rejects it with PostgreSQL's own error) or a json column holds a string
        at all (the cast keeps its text byte for byte, whitespace included).
        """
        strings = False
        for key, _, jsonb in self._json:
            if any(type(row.get(key)) is str for row in rows):
                if not jsonb:
                    return None
                strings = True
        if not self._renamed and not strings:
            return to_json_bytes(rows).decode()
        out: list[dict[str, Any]] = []
        for row in rows:
            new = {name: row.get(key) for key, name, _ in self._plan}
            for _, name, _ in self._json:
                value = new[name]
                if type(value) is str:
                    embedded = _embedded_json(value)
                    if embedded is None:
                        return None
                    new[name] = embedded
            out.append(new)
        return to_json_bytes(out).decode()

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> Any:
        if not self._keys:
            return len(rows)
        if not self._renamed and not self._nested_lists(rows):
            return to_json_bytes(rows).decode()
        plan = self._plan
        return to_json_bytes(
            [
                {
                    name: enc(row.get(key)) if enc is not None else row.get(key)
                    for key, name, enc in plan
                }
                for row in rows
            ]
        ).decode()

    def _nested_lists(self, rows: Sequence[Mapping[str, Any]]) -> bool:
        for key in self._array_keys:
            for row in rows:
                value = row.get(key)
                if type(value) is list and any(type(item) is list for item in value):
                    return True
        return False


def column_name(key: str) -> str:
    """Column for a record key: the key itself, made to fit PostgreSQL's 63 bytes."""
    return fit_identifier(key)


def _dedupe_by_key(
    records: Sequence[Mapping[str, Any]], key_properties: Sequence[str]
) -> list[Mapping[str, Any]]:
    """Keep the last record per key: one upsert statement may touch a row only once."""
    latest: dict[tuple[Any, ...], Mapping[str, Any]] = {}
    for record in records:
        latest[tuple(repr(record.get(k)) for k in key_properties)] = record
    return list(latest.values())
