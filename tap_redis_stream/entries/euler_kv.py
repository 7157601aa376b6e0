"""Decoder for `entry_format = euler_kv`: the KV-connector command envelope.

Wire format: shared/spec/euler-kv-format.md. An entry has exactly one field,
`command`, whose value is a JSON envelope, zstd-compressed when it starts with
the zstd magic bytes. Values are Haskell `show` text, decoded by
`haskell_show` (see there for how each value form is represented).

Table name: `quiet_snake` of `contents_v2.command.tag` without its `Object`
(Create) or `Options` (Update/Delete) suffix. Column name: `mappings[field]`
if present, else `quiet_snake(field)`; the same for field names in a where
clause.

Operations: Create -> `insert` with `row`; Update -> `update` with `row` = the
SET columns and `where`; Delete -> `delete` with `row = {}` and `where`.
`force_drain` is the envelope's `forceDrainToDB` (absent = False), whatever
the kind.

Where clause (`Operation.where`): plain JSON-serialisable dicts, one of

- `{"and": [W, ...]}` from `{"$and": [...]}` (a non-empty list),
- `{"or": [W, ...]}` from `{"$or": [...]}` (a non-empty list),
- `{"not": W}` from `{"$not": W}`, and from `{field: {"$not": T}}`, which
  becomes `{"not": <the clause for field and T>}`,
- `{"column": str, "op": OP, "value": v}`, a comparison, where OP is
  - `"="` from `{field: V}`, `"!="` from `$ne`, `">"` `$gt`, `">="` `$gte`,
    `"<"` `$lt`, `"<="` `$lte`: `v` is one decoded value (a list for an array
    column);
  - `"in"` from `$in`, `"not_in"` from `$notIn`: `v` is a list of decoded
    values, possibly empty.

Nesting is kept as sent (`{"and": [A, {"and": [B]}]}` stays so); it does not
change the meaning. What a target must render to reproduce the old drainer:

- `"in"` and `"not_in"` with an empty list are both TRUE (the drainer's
  reading of `$in []` and `$notIn []`), not FALSE for `in`.
- A `None` value is SQL NULL and must be *bound*, never rewritten to
  `IS NULL`: the drainer's `"col" = null` (or `<> null`, `> null`) is NULL, so
  the comparison matches no row. Likewise a NULL inside an `in` list never
  matches and makes `not_in` match nothing (SQL `IN` / `NOT IN` semantics,
  which `= ANY(array)` / `<> ALL(array)` with bound arrays reproduce).

Parse failures (EntryParseError) name the part of the envelope and the field;
they include neither stream key nor entry ID (the tap adds those). A where
node that is not an object with exactly one key, `null` or `{}` where a clause
is expected, an empty `$and`/`$or`, an unknown `$` operator, and any value
that is not a JSON string or array of strings are all failures. So are
entries the drainer could not have written: no columns to insert or set, two
fields that map to one column, or an update whose second part is not exactly
one where clause.

Speed: a Create, the common entry, is first decoded by msgspec into typed
structs (`_Create`), which checks the envelope's shape in C and skips
`modelObject` without building it; its columns come from a cache keyed by
the field names. Anything that does not fit, and every Update and Delete,
takes the general path below, which also words every error message. The
fast path never accepts what the general path would decode differently.
msgspec checks the JSON syntax of the parts it skips, but not that their bytes
are UTF-8, which the general path's parser checks everywhere: so a command
that is not ASCII has its UTF-8 checked first (invalid UTF-8 in `modelObject`,
`dbName` or `contents_v2.tag` fails both paths alike). One difference is
left: the fast path accepts a Create whose ignored parts (`modelObject`, the
values of `contents_v2` other than `command`) hold JSON numbers beyond a
double, which the general path's parser refuses.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import msgspec
import orjson
import zstandard

from tap_redis_stream.entries import EntryParseError, Operation
from tap_redis_stream.entries.haskell_show import (
    HaskellShowError,
    decode_json_value,
    json_type_name,
    parse_value,
)

__all__ = [
    "DEFAULT_MAX_DECOMPRESSED_BYTES",
    "ZSTD_MAGIC",
    "EulerKvDecoder",
    "WhereClause",
    "quiet_snake",
]

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
COMMAND_FIELD = b"command"
DEFAULT_MAX_DECOMPRESSED_BYTES = 64 * 1024 * 1024

WhereClause = dict[str, Any]
"""A structured where clause: see the module docstring for its shape."""

_CONTENTS_V2_ORDER = ("cmdVersion", "tag", "timestamp", "dbName", "command")
_CONTENTS_V2_FIELDS = frozenset(_CONTENTS_V2_ORDER)
_COMPARISONS = {"$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_LIST_OPERATORS = {"$in": "in", "$notIn": "not_in"}
_ABSENT: Any = object()
_MAX_CACHED_SHAPES = 4096
# Compressed bytes fed per call to a frame that declares no content size. A
# zstd block of 4 bytes (an RLE block) gives up to 128 KB, so one call gives at
# most about 32 MB before the output is counted; a frame this small (nearly
# every command) is decompressed in one call, at no extra cost.
_UNSIZED_FEED_BYTES = 1024


class _CreateCommand(msgspec.Struct):
    tag: str
    contents: dict[str, str | list[str]]


class _CreateContentsV2(msgspec.Struct):
    # Required, as the general path requires them; their values are unused.
    cmdVersion: msgspec.Raw
    tag: msgspec.Raw
    timestamp: msgspec.Raw
    dbName: msgspec.Raw
    command: _CreateCommand


class _Create(msgspec.Struct, tag="Create", tag_field="tag"):
    contents_v2: _CreateContentsV2
    mappings: dict[str, str] = {}
    forceDrainToDB: bool = False


class _Update(msgspec.Struct, tag="Update", tag_field="tag"):
    pass


class _Delete(msgspec.Struct, tag="Delete", tag_field="tag"):
    pass


# A union, so that the tag is required (a lone tagged Struct takes it as optional).
_CREATE = msgspec.json.Decoder(_Create | _Update | _Delete)
_NOT_FAST = (msgspec.ValidationError, msgspec.DecodeError, RecursionError)


@lru_cache(maxsize=8192)
def quiet_snake(name: str) -> str:
    """Snake case as Haskell's `Text.Casing.quietSnake`: `FareV2` -> `fare_v2`.

    Words break at capital humps (a run of capitals keeps all but its last
    letter together: `HTTPServer` -> `http_server`) and at `-`, `_` and white
    space; digits do not break (`FareV2` -> `fare_v2`). Cached: the same few
    table and field names recur in every entry.
    """
    words: list[str] = []
    length = len(name)
    pos = 0
    while pos < length:
        start = pos
        if name[pos].isupper():
            run_end = pos
            while run_end < length and name[run_end].isupper():
                run_end += 1
            if run_end == length:
                words.append(name[pos:])
                break
            if run_end - pos > 1:
                words.append(name[pos : run_end - 1])
            start = run_end - 1  # the run's last capital starts the next word
            pos = run_end
        while pos < length and not name[pos].isupper():
            pos += 1
        words.append(name[start:pos])
    pieces = []
    for word in words:
        pieces.extend(word.replace("-", " ").replace("_", " ").split())
    return "_".join(pieces).lower()


class EulerKvDecoder:
    """Turns one KV-connector stream entry into an `Operation` (see the module docstring).

    Not safe for concurrent use from several threads: it reuses one zstd
    decompression context.
    """

    def __init__(self, *, max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES) -> None:
        """`max_decompressed_bytes` bounds a compressed command's decompressed size."""
        if max_decompressed_bytes <= 0:
            raise ValueError("max_decompressed_bytes must be positive")
        self._max_decompressed_bytes = max_decompressed_bytes
        self._zstd = zstandard.ZstdDecompressor()
        # (field names, mappings) -> column names, for Creates.
        self._shapes: dict[Any, tuple[str, ...] | None] = {}

    def decode(self, stream_key: str, fields: Mapping[bytes, bytes]) -> Operation:
        """Decode an entry's fields; `stream_key` is unused (the format names the table)."""
        raw = fields.get(COMMAND_FIELD)
        if raw is None or len(fields) != 1:
            names = sorted(
                key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
                for key in fields
            )
            raise EntryParseError(
                f"expected exactly one field 'command', found {len(names)}: {names[:5]}"
            )
        return self.decode_command(raw)

    def decode_command(self, raw: bytes) -> Operation:
        """Decode the `command` field's value (JSON, or a zstd frame of JSON)."""
        if raw[:4] == ZSTD_MAGIC:
            raw = self._decompress(raw)
        if not raw.isascii():
            # msgspec checks UTF-8 only in the parts it reads, orjson all of
            # it: check here, so that the paths agree. About 50 ns for an
            # entry of 700 bytes, 250 ns more for the few that are not ASCII.
            try:
                raw.decode()
            except UnicodeDecodeError:
                return self._decode_general(raw)  # which words the error
        try:
            create = _CREATE.decode(raw)
        except _NOT_FAST:
            return self._decode_general(raw)
        if type(create) is not _Create:
            return self._decode_general(raw)
        return self._fast_create(create) or self._decode_general(raw)

    def _fast_create(self, create: _Create) -> Operation | None:
        """The Operation for a well-formed Create; None to let the general path decide."""
        command = create.contents_v2.command
        table = _table_name(command.tag, "Object")
        contents = command.contents
        mappings = create.mappings
        key: Any = tuple(contents)
        if mappings:
            key = (key, tuple(mappings.items()))
        columns = self._shapes.get(key, _ABSENT)
        if columns is _ABSENT:
            columns = _create_columns(contents, mappings)
            if len(self._shapes) >= _MAX_CACHED_SHAPES:
                self._shapes.clear()
            self._shapes[key] = columns
        if table is None or columns is None:
            return None
        try:
            row = {
                column: parse_value(value) if type(value) is str else decode_json_value(value)
                # Not strict: the columns were made from these very keys.
                for column, value in zip(columns, contents.values())  # noqa: B905
            }
        except HaskellShowError:
            return None
        return Operation(table=table, kind="insert", row=row, force_drain=create.forceDrainToDB)

    def _decode_general(self, raw: bytes) -> Operation:
        try:
            envelope = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise EntryParseError(f"command is not valid JSON: {exc}") from exc
        if not isinstance(envelope, dict):
            raise EntryParseError(f"command is {json_type_name(envelope)}, expected an object")
        tag = envelope.get("tag")
        if tag not in ("Create", "Update", "Delete"):
            raise EntryParseError(f"envelope tag {tag!r} is not Create, Update or Delete")
        command = _command(envelope)
        mappings = _mappings(envelope)
        force_drain = envelope.get("forceDrainToDB", False)
        if not isinstance(force_drain, bool):
            raise EntryParseError(
                f"forceDrainToDB is {json_type_name(force_drain)}, expected a boolean"
            )
        contents = command["contents"]
        if tag == "Create":
            table = _table(command, "Object", tag)
            row = _create_row(contents, mappings)
            return Operation(table=table, kind="insert", row=row, force_drain=force_drain)
        table = _table(command, "Options", tag)
        if tag == "Update":
            row, where = _update(contents, mappings)
            return Operation(
                table=table,
                kind="update",
                row=row,
                where=where,
                force_drain=force_drain,
                model=_updated_model(envelope, mappings),
            )
        where = _where_clause(contents, mappings, "Delete")
        return Operation(table=table, kind="delete", row={}, where=where, force_drain=force_drain)

    def _decompress(self, raw: bytes) -> bytes:
        limit = self._max_decompressed_bytes
        try:
            declared = zstandard.frame_content_size(raw)
            if declared > limit:
                raise EntryParseError(
                    f"zstd frame declares {declared} bytes, more than "
                    f"max_decompressed_bytes={limit}"
                )
            # A decompression object tells a truncated frame (not eof) from a
            # complete one, and the bytes after it (unused_data).
            stream = self._zstd.decompressobj()
            if declared >= 0:
                # zstd refuses to write past the declared size, so one call
                # is bounded by it (the common case: the KV layer's frames
                # declare their size).
                data = stream.decompress(raw)
                trailing = len(stream.unused_data)
            else:
                data, trailing = _decompress_unsized(stream, raw, limit)
        except zstandard.ZstdError as exc:
            raise EntryParseError(f"zstd-compressed command does not decompress: {exc}") from exc
        if not stream.eof:
            raise EntryParseError("zstd-compressed command is truncated (incomplete frame)")
        if trailing:
            raise EntryParseError(f"zstd-compressed command has {trailing} bytes after its frame")
        return data


def _decompress_unsized(
    stream: zstandard.ZstdDecompressionObj, raw: bytes, limit: int
) -> tuple[bytes, int]:
    """Decompress a frame that declares no size, never holding much more than `limit` bytes.

    The input goes in `_UNSIZED_FEED_BYTES` at a time and the output is
    counted after each piece: a 32 KB frame can expand to a gigabyte. Returns
    the data and the number of bytes after the frame.
    """
    if len(raw) <= _UNSIZED_FEED_BYTES:
        data = stream.decompress(raw)
        if len(data) > limit:
            raise _too_big(limit)
        return data, len(stream.unused_data)
    parts: list[bytes] = []
    size = 0
    end = 0
    view = memoryview(raw)
    while end < len(raw) and not stream.eof:
        start, end = end, end + _UNSIZED_FEED_BYTES
        part = stream.decompress(view[start:end])
        size += len(part)
        if size > limit:
            raise _too_big(limit)
        parts.append(part)
    trailing = len(stream.unused_data) + max(len(raw) - end, 0) if stream.eof else 0
    return b"".join(parts), trailing


def _too_big(limit: int) -> EntryParseError:
    return EntryParseError(
        f"zstd frame decompresses to more than max_decompressed_bytes={limit} bytes"
    )


def _command(envelope: dict[str, Any]) -> dict[str, Any]:
    contents_v2 = envelope.get("contents_v2", _ABSENT)
    if contents_v2 is _ABSENT:
        raise EntryParseError("envelope lacks contents_v2")
    if not isinstance(contents_v2, dict):
        raise EntryParseError(f"contents_v2 is {json_type_name(contents_v2)}, expected an object")
    if not contents_v2.keys() >= _CONTENTS_V2_FIELDS:
        missing = [name for name in _CONTENTS_V2_ORDER if name not in contents_v2]
        raise EntryParseError(f"contents_v2 lacks {', '.join(missing)}")
    command = contents_v2["command"]
    if not isinstance(command, dict):
        raise EntryParseError(
            f"contents_v2.command is {json_type_name(command)}, expected an object"
        )
    for name in ("tag", "contents"):
        if name not in command:
            raise EntryParseError(f"contents_v2.command lacks {name}")
    return command


def _mappings(envelope: dict[str, Any]) -> dict[str, str]:
    mappings = envelope.get("mappings", _ABSENT)
    if mappings is _ABSENT:
        return {}
    if not isinstance(mappings, dict):
        raise EntryParseError(f"mappings is {json_type_name(mappings)}, expected an object")
    for field, column in mappings.items():
        if not isinstance(column, str) or not column:
            found = "an empty string" if column == "" else json_type_name(column)
            raise EntryParseError(f"mappings[{field!r}] is {found}, expected a non-empty string")
    return mappings


@lru_cache(maxsize=1024)
def _table_name(model: str, suffix: str) -> str | None:
    """The table a model tag names, or None when it does not end in `suffix` or names none."""
    if not model.endswith(suffix):
        return None
    return quiet_snake(model[: -len(suffix)]) or None


def _create_columns(contents: dict[str, Any], mappings: dict[str, str]) -> tuple[str, ...] | None:
    """Column names for a Create's fields; None when one names no column or two share one."""
    if not contents or not all(mappings.values()):
        return None
    columns = tuple(mappings.get(field) or quiet_snake(field) for field in contents)
    if "" in columns or len(set(columns)) != len(columns):
        return None
    return columns


def _table(command: dict[str, Any], suffix: str, tag: str) -> str:
    model = command["tag"]
    if not isinstance(model, str) or not model.endswith(suffix):
        raise EntryParseError(f"contents_v2.command.tag {model!r} must end in {suffix!r} for {tag}")
    table = _table_name(model, suffix)
    if table is None:
        raise EntryParseError(f"contents_v2.command.tag {model!r} names no table")
    return table


def _column(field: str, mappings: dict[str, str], where: str) -> str:
    column = mappings.get(field) or quiet_snake(field)
    if not column:
        raise EntryParseError(f"{where}: field {field!r} names no column")
    return column


def _updated_model(envelope: dict[str, Any], mappings: dict[str, str]) -> dict[str, Any] | None:
    """`updatedModel` (plain JSON) with its keys mapped like columns; None when absent."""
    model = envelope.get("updatedModel")
    if model is None:
        return None
    if not isinstance(model, dict):
        raise EntryParseError(f"updatedModel is {json_type_name(model)}, expected an object")
    return {mappings.get(field) or quiet_snake(field): value for field, value in model.items()}


def _create_row(contents: Any, mappings: dict[str, str]) -> dict[str, Any]:
    if not isinstance(contents, dict):
        raise EntryParseError(
            f"Create contents_v2.command.contents is {json_type_name(contents)}, expected an object"
        )
    if not contents:
        raise EntryParseError("Create contents_v2.command.contents has no fields")
    values: list[Any] = []
    for field, value in contents.items():
        try:
            values.append(decode_json_value(value))
        except HaskellShowError as exc:
            raise EntryParseError(f"Create contents field {field!r}: {exc}") from exc
    columns = _create_columns(contents, mappings)
    if columns is None:
        _explain_columns(list(contents), mappings, "Create contents")
    return dict(zip(columns or (), values, strict=True))


def _update(contents: Any, mappings: dict[str, str]) -> tuple[dict[str, Any], WhereClause]:
    if not isinstance(contents, list) or len(contents) != 2:
        raise EntryParseError(
            "Update contents_v2.command.contents must be [[{key, value}...], [where clause]]"
        )
    sets, clauses = contents
    if not isinstance(sets, list) or not sets:
        raise EntryParseError("Update contents[0] must be a non-empty array of {key, value}")
    row: dict[str, Any] = {}
    for index, item in enumerate(sets):
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("key"), str)
            or ("value" not in item)
        ):
            raise EntryParseError(f"Update contents[0][{index}] must be an object {{key, value}}")
        field = item["key"]
        try:
            row[_column(field, mappings, "Update set")] = decode_json_value(item["value"])
        except HaskellShowError as exc:
            raise EntryParseError(f"Update set field {field!r}: {exc}") from exc
    if len(row) != len(sets):
        _explain_columns([item["key"] for item in sets], mappings, "Update set")
    if not isinstance(clauses, list) or len(clauses) != 1:
        raise EntryParseError("Update contents[1] must be an array of exactly one where clause")
    return row, _where_clause(clauses[0], mappings, "Update")


def _explain_columns(fields: list[str], mappings: dict[str, str], where: str) -> None:
    """Raise for the field that names no column or a column already taken."""
    seen: dict[str, str] = {}
    for field in fields:
        column = _column(field, mappings, where)
        if column in seen:
            raise EntryParseError(
                f"{where}: fields {seen[column]!r} and {field!r} both map to column {column!r}"
            )
        seen[column] = field
    raise EntryParseError(f"{where}: duplicate fields")  # unreachable: callers saw one


def _where_clause(clause: Any, mappings: dict[str, str], tag: str) -> WhereClause:
    if not isinstance(clause, dict) or clause.get("clauseTag") != "where":
        raise EntryParseError(f"{tag} where clause must be an object with clauseTag 'where'")
    if "clauseContents" not in clause:
        raise EntryParseError(f"{tag} where clause lacks clauseContents")
    return _where(clause["clauseContents"], mappings, f"{tag} where")


def _where(node: Any, mappings: dict[str, str], path: str) -> WhereClause:
    if not isinstance(node, dict) or len(node) != 1:
        found = f"{len(node)} keys" if isinstance(node, dict) else json_type_name(node)
        raise EntryParseError(f"{path}: expected an object with exactly one key, got {found}")
    ((key, value),) = node.items()
    if key in ("$and", "$or"):
        if not isinstance(value, list) or not value:
            raise EntryParseError(f"{path}.{key}: expected a non-empty array of clauses")
        return {
            key[1:]: [_where(item, mappings, f"{path}.{key}[{i}]") for i, item in enumerate(value)]
        }
    if key == "$not":
        return {"not": _where(value, mappings, f"{path}.$not")}
    if key.startswith("$"):
        raise EntryParseError(f"{path}: unknown operator {key!r}")
    return _term(_column(key, mappings, path), value, f"{path}.{key}")


def _term(column: str, term: Any, path: str) -> WhereClause:
    if not isinstance(term, dict):
        return {"column": column, "op": "=", "value": _decode(term, path)}
    if len(term) != 1:
        raise EntryParseError(
            f"{path}: expected an object with exactly one operator, got {len(term)} keys"
        )
    ((operator, operand),) = term.items()
    if operator in _COMPARISONS:
        value = _decode(operand, f"{path}.{operator}")
        return {"column": column, "op": _COMPARISONS[operator], "value": value}
    if operator in _LIST_OPERATORS:
        if not isinstance(operand, list):
            raise EntryParseError(
                f"{path}.{operator}: expected an array, got {json_type_name(operand)}"
            )
        values = _decode(operand, f"{path}.{operator}")
        return {"column": column, "op": _LIST_OPERATORS[operator], "value": values}
    if operator == "$not":
        return {"not": _term(column, operand, f"{path}.$not")}
    raise EntryParseError(f"{path}: unknown operator {operator!r}")


def _decode(value: Any, path: str) -> Any:
    try:
        return decode_json_value(value)
    except HaskellShowError as exc:
        raise EntryParseError(f"{path}: {exc}") from exc
