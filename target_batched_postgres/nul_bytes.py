"""NUL bytes (U+0000): PostgreSQL stores none in text, text[] or jsonb.

`nul_bytes: reject` (the default) leaves records as they are: PostgreSQL
refuses the value, the batch falls back to one record at a time and the
record is dead-lettered, its reason naming the column. `strip` removes
U+0000 from every string of the record (keys included, at any depth) before
it is published or written, so Kafka and PostgreSQL get the same row.

A JSON column's text is not parsed: one that spells a NUL byte as the escape
`\\u0000` is refused by jsonb and dead-lettered in both modes, its reason
naming the column. A NUL byte in a column *name* never reaches PostgreSQL:
`identifiers.fit_identifier` drops it and adds a hash, as for a long name.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from target_batched_postgres import control

NUL = "\x00"
ESCAPED_NUL = "\\u0000"  # how JSON text spells a NUL byte
_CHANGE_PROPERTIES = (control.WHERE, control.MODEL)


class NulBytes(StrEnum):
    """What the target does with a record holding a NUL byte."""

    REJECT = "reject"
    STRIP = "strip"


def _holds(value: Any, text: str) -> bool:
    """Whether any string inside `value` (keys included) holds `text`; iterative, any depth."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if text in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _holds_nul(value: Any) -> bool:
    return _holds(value, NUL)


def nul_column(record: Mapping[str, Any], text: str = NUL) -> str | None:
    """The first column (or `_sdc_where` / `_sdc_model`) whose name or value holds `text`."""
    for key, value in record.items():
        if key in control.CONTROL_PROPERTIES and key not in _CHANGE_PROPERTIES:
            continue
        if text in key or _holds(value, text):
            return key
    return None


def strip_nul(value: Any) -> Any:
    """`value` with U+0000 removed from every string in it (keys too); iterative, any depth."""
    return replace_nul(value, "")


def replace_nul(value: Any, by: str) -> Any:
    """`value` with each U+0000 in its strings (keys too) replaced by `by`; iterative, any depth.

    A value holding no NUL byte is returned as it is, not copied.
    """
    if isinstance(value, str):
        return value.replace(NUL, by)
    if not isinstance(value, dict | list) or not _holds_nul(value):
        return value
    holder: list[Any] = [None]
    # Containers still to copy: (source, the copy's parent, its key or index there).
    pending: list[tuple[Any, Any, Any]] = [(value, holder, 0)]
    while pending:
        source, parent, slot = pending.pop()
        copy: Any
        if isinstance(source, dict):
            copy = {}
            for key, item in source.items():
                clean = key.replace(NUL, by) if isinstance(key, str) else key
                copy[clean] = _clean_or_queue(item, copy, clean, pending, by)
        else:
            copy = []
            for index, item in enumerate(source):
                copy.append(_clean_or_queue(item, copy, index, pending, by))
        parent[slot] = copy
    return holder[0]


def _clean_or_queue(
    item: Any, parent: Any, slot: Any, pending: list[tuple[Any, Any, Any]], by: str
) -> Any:
    """A string cleaned, another scalar as is; a container queued (its copy comes later)."""
    if isinstance(item, str):
        return item.replace(NUL, by)
    if isinstance(item, dict | list):
        pending.append((item, parent, slot))
        return None
    return item


def describe_nul(record: Mapping[str, Any], error: str, sqlstate: str | None) -> str:
    """The dead letter's reason: PostgreSQL's, naming the column when a NUL byte caused it."""
    if not (sqlstate == "22P05" or "NUL" in error or ESCAPED_NUL in error):
        return error
    column = nul_column(record)
    if column is not None:
        return (
            f"column {column!r} holds a NUL byte (U+0000), which PostgreSQL cannot store: {error}"
        )
    column = nul_column(record, ESCAPED_NUL)
    if column is not None:
        return (
            f"column {column!r} holds JSON text with the escape \\u0000 (a NUL byte), "
            f"which jsonb cannot store: {error}"
        )
    return error
