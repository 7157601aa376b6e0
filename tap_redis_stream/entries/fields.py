"""Decoders for `entry_format = fields` and `json`.

`fields`: the entry's field/value pairs are the row; values that are JSON
(numbers, true/false/null, objects, arrays) are decoded, anything else is
text. `json`: one field (`json_field`) holds a JSON object, either the row
itself or an envelope `{"table": ..., "op": "insert|update|delete", "row":
{...}, "where": {...}, "force_drain": bool}`.

An object with a key `op` or `row` is an envelope (so a row with a column of
either name must be sent inside one). `op` is absent (insert) or one of the
three strings; an insert or update needs `row`, a non-empty object (the
columns to write or set), an update or delete a `where` object; a delete's
`row` may be absent. Anything else is a parse failure, never a write of fewer
columns than were sent.

The table comes from a field (`table_field`, removed from the row) or from a
template over the stream key (`table_template`, `{stream}` = the key without
its `{...}` hash tag).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from tap_redis_stream.entries import EntryParseError, Operation
from tap_redis_stream.entries.haskell_show import json_type_name

_HASH_TAG = re.compile(r"\{[^}]*\}")
# A tuple, not a set: `in` compares, so an array or object `op` is merely
# not found (a set would raise TypeError: unhashable).
_OPERATIONS = ("insert", "update", "delete")


def stream_base(stream_key: str) -> str:
    """`orders{shard-1}` -> `orders`."""
    return _HASH_TAG.sub("", stream_key)


def _text(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EntryParseError(
            f"{what} is not valid UTF-8 ({exc.reason} at byte {exc.start})"
        ) from None


class _TableNaming:
    def __init__(self, table_field: str, table_template: str | None) -> None:
        self.table_field = table_field.encode()
        self.table_template = table_template

    def table(self, stream_key: str, fields: Mapping[bytes, bytes]) -> str:
        if self.table_template:
            return self.table_template.replace("{stream}", stream_base(stream_key))
        raw = fields.get(self.table_field)
        if raw is None:
            raise EntryParseError(f"missing the table field {self.table_field.decode()!r}")
        name = _text(raw, "the table field").strip()
        if not name:
            raise EntryParseError("the table field is empty")
        return name


class FieldsDecoder(_TableNaming):
    """Each field/value pair is a column; JSON-looking values are decoded."""

    def decode(self, stream_key: str, fields: Mapping[bytes, bytes]) -> Operation:
        table = self.table(stream_key, fields)
        row: dict[str, Any] = {}
        for name, value in fields.items():
            if name == self.table_field and not self.table_template:
                continue
            column = _text(name, "a field name")
            text = _text(value, f"field {column!r}")
            row[column] = _maybe_json(text)
        if not row:
            raise EntryParseError("no columns")
        return Operation(table=table, kind="insert", row=row)


def _maybe_json(text: str) -> Any:
    if text and (text[0] in '{["-0123456789' or text in ("true", "false", "null")):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
    return text


class JsonDecoder(_TableNaming):
    """One field holds a JSON object: the row, or an envelope with table/op/row/where."""

    def __init__(self, table_field: str, table_template: str | None, json_field: str) -> None:
        super().__init__(table_field, table_template)
        self.json_field = json_field.encode()

    def decode(self, stream_key: str, fields: Mapping[bytes, bytes]) -> Operation:
        raw = fields.get(self.json_field)
        if raw is None:
            raise EntryParseError(f"missing the JSON field {self.json_field.decode()!r}")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise EntryParseError(
                f"field {self.json_field.decode()!r} is not JSON: {exc}"
            ) from None
        if not isinstance(body, dict):
            raise EntryParseError(f"field {self.json_field.decode()!r} is not a JSON object")
        if "row" in body or "op" in body:
            return self._envelope(stream_key, fields, body)
        if not body:
            raise EntryParseError("the JSON object has no columns")
        return Operation(table=self.table(stream_key, fields), kind="insert", row=body)

    def _envelope(
        self, stream_key: str, fields: Mapping[bytes, bytes], body: dict[str, Any]
    ) -> Operation:
        op = body.get("op", "insert")
        if op not in _OPERATIONS:
            if not isinstance(op, str):
                raise EntryParseError(
                    f"envelope 'op' is {json_type_name(op)}, "
                    "expected 'insert', 'update' or 'delete'"
                )
            raise EntryParseError(f"unknown op {op!r}")
        row = body.get("row", {})
        if not isinstance(row, dict):
            raise EntryParseError(f"envelope 'row' is {json_type_name(row)}, expected an object")
        if not row and op != "delete":
            what = "an empty 'row'" if "row" in body else "no 'row'"
            raise EntryParseError(
                f"{op} envelope has {what}: it needs a non-empty object 'row' "
                "(an object with a key 'op' or 'row' is an envelope; send a row with "
                "a column of that name inside one)"
            )
        table = body.get("table") or self.table(stream_key, fields)
        if not isinstance(table, str):
            raise EntryParseError("envelope 'table' is not a string")
        where = body.get("where")
        if op != "insert" and not isinstance(where, dict):
            raise EntryParseError(f"{op} without a 'where' object")
        force = body.get("force_drain", False)
        if not isinstance(force, bool):
            raise EntryParseError("envelope 'force_drain' is not a boolean")
        return Operation(table=table, kind=op, row=row, where=where, force_drain=force)
