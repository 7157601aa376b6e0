"""Singer messages written straight to stdout: SCHEMA per table as it grows, RECORD, STATE.

Records go out in entry order, interleaved across tables, so one pass over
the stream serves every table (the SDK's stream-by-stream sync cannot).
"""

from __future__ import annotations

import decimal
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any, Protocol

import msgspec

from tap_redis_stream import control
from tap_redis_stream.entries import EntryParseError, Operation

_CONTROL_SCHEMA: dict[str, Any] = {
    control.OPERATION: {"type": "string", "enum": ["insert", "update", "delete"]},
    control.FORCE_DRAIN: {"type": "boolean"},
    control.SOURCE_STREAM: {"type": "string"},
    control.SOURCE_ENTRY_ID: {"type": "string"},
    control.WHERE: {"type": ["object", "null"]},
    control.MODEL: {"type": ["object", "null"]},
}
# Decimals are written as exact JSON numbers (every digit and the scale).
_ENCODER = msgspec.json.Encoder(decimal_format="number")
MAX_SHAPES = 1024  # row shapes remembered per table (see TableSchema.observe)


def dumps(message: Mapping[str, Any]) -> bytes:
    return _ENCODER.encode(message)


def json_type(value: Any) -> str | None:
    """JSON Schema type of a decoded value (None for null)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float | decimal.Decimal):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def widen(current: str | None, seen: str) -> str | None:
    """The narrowest type holding both; None means any JSON value."""
    if current == seen:
        return current
    if {current, seen} == {"integer", "number"}:
        return "number"
    return None


def check_reserved(table: str, reserved: frozenset[str], columns: Iterable[str]) -> None:
    """Raise EntryParseError when a column has a reserved name (a control property's)."""
    if reserved.isdisjoint(columns):
        return
    taken = sorted(reserved.intersection(columns))
    names = ", ".join(map(repr, taken))
    which = f"column {names} has" if len(taken) == 1 else f"columns {names} have"
    raise EntryParseError(
        f"table {table!r}: {which} the name of a control property the tap "
        "adds to every record; rename it (euler_kv: with a `mappings` entry)"
    )


class TableSchema:
    """Columns seen for one table and their inferred types."""

    def __init__(
        self, name: str, key_properties: list[str], *, reserved: frozenset[str] = frozenset()
    ) -> None:
        """`reserved`: names no column may have (observe refuses a row with one)."""
        self.name = name
        self.configured_keys = key_properties
        self.reserved = reserved
        self.types: dict[str, str | None] = {}
        self.unset: set[str] = set()  # columns seen only with null so far
        self._shapes: set[tuple[str | type, ...]] = set()

    def observe(self, row: Mapping[str, Any]) -> bool:
        """Take in a row's columns; True when the schema changed.

        Raises EntryParseError, taking nothing in, for a row with a reserved
        column name.
        """
        # A row with the columns and value types of a row seen before cannot
        # change the schema (types only widen): one set lookup per row
        # instead of a type check per value. A shape seen before was also
        # checked for reserved names. The shape is the column names, then the
        # value types: one flat tuple, as no name (a str) is a type.
        shape: tuple[str | type, ...] = (*row, *map(type, row.values()))
        if shape in self._shapes:
            return False
        changed = self.take_in(tuple(row), tuple(map(json_type, row.values())))
        if len(self._shapes) >= MAX_SHAPES:
            self._shapes.clear()
        self._shapes.add(shape)
        return changed

    def take_in(self, columns: Sequence[str], kinds: Sequence[str | None]) -> bool:
        """Take in a row's column names and their values' JSON types; True when the
        schema changed. Raises EntryParseError, taking nothing in, for a reserved name."""
        check_reserved(self.name, self.reserved, columns)
        changed = False
        for column, kind in zip(columns, kinds, strict=True):
            if column not in self.types:
                self.types[column] = kind
                if kind is None:
                    self.unset.add(column)
                changed = True
            elif kind is not None:
                if column in self.unset:
                    self.unset.discard(column)
                    self.types[column] = kind
                    changed = True
                elif (new := widen(self.types[column], kind)) != self.types[column]:
                    self.types[column] = new
                    changed = True
        return changed

    @property
    def key_properties(self) -> list[str]:
        keys = self.configured_keys
        return list(keys) if keys and all(k in self.types for k in keys) else []

    def json_schema(self) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        for column, kind in self.types.items():
            if kind is None or column in self.unset:
                properties[column] = {}
            elif column in self.key_properties:
                properties[column] = {"type": kind}
            else:
                properties[column] = {"type": [kind, "null"]}
        properties.update(_CONTROL_SCHEMA)
        return {"type": "object", "properties": properties, "additionalProperties": True}


def _record_message(
    table: str, operation: Operation, stream_key: str, entry_id: str
) -> dict[str, Any]:
    """The RECORD message of an operation: its row, then the control properties."""
    record = {
        **operation.row,
        control.OPERATION: operation.kind,
        control.FORCE_DRAIN: operation.force_drain,
        control.SOURCE_STREAM: stream_key,
        control.SOURCE_ENTRY_ID: entry_id,
    }
    if operation.kind != "insert":
        record[control.WHERE] = operation.where
    if operation.model is not None:
        record[control.MODEL] = operation.model
    return {"type": "RECORD", "stream": table, "record": record}


class ByteSink(Protocol):
    def write(self, data: bytes | bytearray | memoryview, /) -> int: ...

    def flush(self) -> None: ...


class RecordLines:
    """RECORD lines (and any other message) encoded into one buffer, `pending`."""

    def __init__(self) -> None:
        self.pending = bytearray()
        # (table, stream key, force_drain) -> the bytes around an insert's row.
        self._insert_frames: dict[tuple[str, str, bool], tuple[bytes, bytes]] = {}

    def record(self, operation: Operation, stream_key: str, entry_id: str) -> None:
        """The operation's RECORD line; its table's SCHEMA is the caller's."""
        row = operation.row
        if operation.kind == "insert" and row and operation.model is None:
            self._insert(operation.table, row, stream_key, operation.force_drain, entry_id)
        else:
            self.message(_record_message(operation.table, operation, stream_key, entry_id))

    def message(self, message: Mapping[str, Any]) -> None:
        pending = self.pending
        size = len(pending)
        try:
            _ENCODER.encode_into(message, pending, -1)
        except BaseException:
            del pending[size:]  # a message that cannot be encoded leaves no partial line
            raise
        pending += b"\n"

    def _insert(
        self,
        table: str,
        row: Mapping[str, Any],
        stream_key: str,
        force_drain: bool,
        entry_id: str,
    ) -> None:
        """An insert's RECORD line, the bytes `message` would give, without building its dicts.

        The row is encoded alone, its closing brace replaced by the control
        properties' bytes; see _insert_frame. The row is not empty, and
        observe has refused control property names in it.
        """
        frame = self._insert_frames.get((table, stream_key, force_drain))
        if frame is None:
            frame = self._insert_frame(table, stream_key, force_drain)
        pending = self.pending
        size = len(pending)
        pending += frame[0]
        try:
            _ENCODER.encode_into(row, pending, -1)
            pending[-1:] = frame[1]
            _ENCODER.encode_into(entry_id, pending, -1)
        except BaseException:
            del pending[size:]  # a message that cannot be encoded leaves no partial line
            raise
        pending += b"}}\n"

    def _insert_frame(self, table: str, stream_key: str, force_drain: bool) -> tuple[bytes, bytes]:
        """The bytes before an insert's row and between its last value and its entry ID.

        `{"type":"RECORD","stream":T,"record":` and
        `,"_sdc_operation":"insert",...,"_sdc_source_entry_id":`, cut from the
        message `_record_message` makes for a one-column row and the ID "0".
        """
        placeholder = Operation(table, "insert", {"": 0}, force_drain=force_drain)
        line = dumps(_record_message(table, placeholder, stream_key, "0"))
        row_at = line.index(b'"record":{"":0,') + len(b'"record":')
        frame = (line[:row_at], line[row_at + len(b'{"":0') : -len(b'"0"}}')])
        if len(self._insert_frames) >= MAX_SHAPES:
            self._insert_frames.clear()
        self._insert_frames[(table, stream_key, force_drain)] = frame
        return frame


class MessageWriter:
    """Writes SCHEMA (when a table's columns change), RECORD and STATE lines."""

    def __init__(
        self,
        key_properties: list[str],
        out: ByteSink | None = None,
        deselected: set[str] | None = None,
    ) -> None:
        self._out = out
        self._keys = key_properties
        self.deselected = deselected or set()
        self.tables: dict[str, TableSchema] = {}
        self.records_written = 0
        self._lines = RecordLines()  # lines not written yet: out with the next STATE

    def record(self, operation: Operation, stream_key: str, entry_id: str) -> None:
        if operation.table in self.deselected:
            return
        table = self.tables.get(operation.table)
        new = table is None
        if table is None:
            table = self._new_table(operation.table)
        # observe refuses a row with a control property's name; a new table
        # is kept only once it has a row, so that its SCHEMA is written.
        if table.observe(operation.row) or new:
            self._schema(table)
        self._lines.record(operation, stream_key, entry_id)
        self.records_written += 1

    def take_in(self, table_name: str, columns: Sequence[str], kinds: Sequence[str | None]) -> None:
        """A row shape decoded elsewhere (see decode_pool): its SCHEMA when it changes one."""
        table = self.tables.get(table_name)
        new = table is None
        if table is None:
            table = self._new_table(table_name)
        if table.take_in(columns, kinds) or new:
            self._schema(table)

    def lines(self, data: bytes | memoryview) -> None:
        """RECORD lines encoded elsewhere (see decode_pool), after their tables' SCHEMA."""
        self._lines.pending += data

    def _new_table(self, name: str) -> TableSchema:
        return TableSchema(name, self._keys, reserved=control.CONTROL_PROPERTIES)

    def _schema(self, table: TableSchema) -> None:
        """Keep the table and write its SCHEMA: it changed, or it is new (a table's
        first entry may be a delete, without columns: it needs a SCHEMA too)."""
        self.tables[table.name] = table
        self._lines.message(
            {
                "type": "SCHEMA",
                "stream": table.name,
                "schema": table.json_schema(),
                "key_properties": table.key_properties,
            }
        )

    def state(self, value: Mapping[str, Any]) -> None:
        """Write the lines held back, then this STATE, in one write, and flush."""
        self._lines.message({"type": "STATE", "value": value})
        self.flush()

    def flush(self) -> None:
        """Write the lines held back (SCHEMA and RECORD lines go out with the next STATE)."""
        lines, self._lines.pending = self._lines.pending, bytearray()
        stream = self._stream()
        write_all(stream, lines)
        stream.flush()

    def _stream(self) -> ByteSink:
        # Looked up per call: tests and the SDK's runners swap sys.stdout.
        if self._out is not None:
            return self._out
        return getattr(sys.stdout, "buffer", None) or _TextAdapter(sys.stdout)


def write_all(stream: ByteSink, data: bytes | bytearray) -> None:
    """Write every byte of `data`, however many calls that takes.

    A write to a pipe can take less than it is given and say so. CPython's
    BufferedWriter does that (3.11 here) when a stop signal (Ctrl-Z, a
    debugger or py-spy attaching) interrupts a blocking write larger than its
    buffer; a caller that ignores the count loses the rest of the write and
    the next line starts inside a cut one.
    """
    view = memoryview(data)
    while view:
        written = stream.write(view)
        if not written:
            raise OSError(f"stdout took no bytes of {len(view)} left to write")
        view = view[written:]


class _TextAdapter:
    """Bytes in, text out: for a text-only sys.stdout (io.StringIO in test runners)."""

    def __init__(self, text: IO[str]) -> None:
        self._text = text

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._text.write(str(data, "utf-8"))
        return len(data)  # bytes, as a byte stream counts them

    def flush(self) -> None:
        self._text.flush()
