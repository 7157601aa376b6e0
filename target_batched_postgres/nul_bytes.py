"""NUL bytes (U+0000): PostgreSQL stores none in text, text[] or jsonb.

`nul_bytes: reject` (the default) leaves records as they are: PostgreSQL
refuses the value, the batch falls back to one record at a time and the
record is dead-lettered, its reason naming the column. `strip` removes
U+0000 from every string of the record (keys included, at any depth) before
it is published or written, so Kafka and PostgreSQL get the same row.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from target_batched_postgres import control

NUL = "\x00"
_CHANGE_PROPERTIES = (control.WHERE, control.MODEL)


class NulBytes(StrEnum):
    """What the target does with a record holding a NUL byte."""

    REJECT = "reject"
    STRIP = "strip"


def _holds_nul(value: Any) -> bool:
    """Whether any string inside `value` (keys included) holds U+0000; iterative, any depth."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if NUL in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def nul_column(record: Mapping[str, Any]) -> str | None:
    """The first column (or `_sdc_where` / `_sdc_model`) whose value holds a NUL byte."""
    for key, value in record.items():
        if key in control.CONTROL_PROPERTIES and key not in _CHANGE_PROPERTIES:
            continue
        if NUL in key or _holds_nul(value):
            return key
    return None


def strip_nul(value: Any) -> Any:
    """`value` with U+0000 removed from every string in it (keys too); iterative, any depth."""
    if isinstance(value, str):
        return value.replace(NUL, "")
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
                clean = key.replace(NUL, "") if isinstance(key, str) else key
                copy[clean] = _clean_or_queue(item, copy, clean, pending)
        else:
            copy = []
            for index, item in enumerate(source):
                copy.append(_clean_or_queue(item, copy, index, pending))
        parent[slot] = copy
    return holder[0]


def _clean_or_queue(item: Any, parent: Any, slot: Any, pending: list[tuple[Any, Any, Any]]) -> Any:
    """A string cleaned, another scalar as is; a container queued (its copy comes later)."""
    if isinstance(item, str):
        return item.replace(NUL, "")
    if isinstance(item, dict | list):
        pending.append((item, parent, slot))
        return None
    return item


def describe_nul(record: Mapping[str, Any], error: str, sqlstate: str | None) -> str:
    """The dead letter's reason: PostgreSQL's, naming the column when a NUL byte caused it."""
    caused = sqlstate == "22P05" or "NUL" in error or "\\u0000" in error
    column = nul_column(record) if caused else None
    if column is None:
        return error
    return (
        f"column {column!r} holds a NUL byte (U+0000), which PostgreSQL cannot store "
        f"(nul_bytes=reject; `strip` removes them): {error}"
    )
