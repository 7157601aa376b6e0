"""Lone surrogates (U+D800-U+DFFF on their own): JSON text can spell them, UTF-8 cannot.

A Singer line may carry `"\\ud800"` (Python's `json.dumps` writes one for a
string decoded with `surrogateescape`, say); the reader gives a Python string
holding that code point, which no UTF-8 encoder takes. So PostgreSQL cannot
store it in text, text[] or jsonb (jsonb also refuses the escape itself),
as it cannot store a NUL byte (see nul_bytes.py).

Nothing is checked per record: the encoders raise UnicodeEncodeError where
such a string is met, and each caller handles it there. The row's write is
refused as `RecordRejected` (`not_utf8`), so its batch falls back to one
record at a time and only that record is dead-lettered, the reason naming
the column; the dead letter's payload keeps each lone surrogate as the
visible text `\\ud800` (a backslash and five characters). Kafka gets the
row as the tap sent it: JSON with the escape `\\ud800` (`to_json_bytes_exact`).
A column *name* holding one loses it and gets a hash suffix
(`identifiers.fit_identifier`), as for a NUL byte.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from target_batched_postgres import control
from target_batched_postgres.errors import RecordRejected
from target_batched_postgres.values import to_json_bytes

SURROGATE = re.compile("[\ud800-\udfff]")
NOT_UTF8 = "holds a lone surrogate, which is not UTF-8 and which PostgreSQL cannot store"
_CHANGE_PROPERTIES = (control.WHERE, control.MODEL)


def holds_surrogate(value: Any) -> bool:
    """Whether any string inside `value` (keys included) holds one; iterative, any depth."""
    return first_surrogate(value) is not None


def first_surrogate(value: Any) -> str | None:
    """A lone surrogate found in a string inside `value` (keys included); iterative, any depth."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found = SURROGATE.search(item)
            if found:
                return found.group()
        elif isinstance(item, dict):  # in order: the first one found is the first one
            stack.extend(reversed([part for pair in item.items() for part in pair]))
        elif isinstance(item, list):
            stack.extend(reversed(item))
    return None


def surrogate_column(record: Mapping[str, Any]) -> str | None:
    """The first column (or `_sdc_where` / `_sdc_model`) whose name or value holds one."""
    for key, value in record.items():
        if key in control.CONTROL_PROPERTIES and key not in _CHANGE_PROPERTIES:
            continue
        if holds_surrogate(key) or holds_surrogate(value):
            return key
    return None


def not_utf8(exc: UnicodeEncodeError) -> RecordRejected:
    """A write refused because a string in its records is not UTF-8: fall back, dead-letter."""
    return RecordRejected(f"a value {NOT_UTF8} ({exc})")


def visible(text: str) -> str:
    """`text` with each lone surrogate as the visible text `\\udXXX`."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def escape_surrogates(value: Any) -> Any:
    """`value` with each lone surrogate in its strings (keys too) as visible text; any depth."""
    return map_strings(value, visible)


def map_strings(value: Any, change: Callable[[str], str]) -> Any:
    """A copy of `value` with `change` applied to each string holding a lone surrogate.

    Iterative, any depth; the containers are copied, other values kept as they are.
    """
    holder: list[Any] = [None]
    # Values still to copy: (source, the copy's parent, its key or index there).
    pending: list[tuple[Any, Any, Any]] = [(value, holder, 0)]
    while pending:
        source, parent, slot = pending.pop()
        if isinstance(source, str):
            parent[slot] = change(source) if SURROGATE.search(source) else source
        elif isinstance(source, dict):
            copy: dict[Any, Any] = {}
            for key, item in source.items():
                new_key = change(key) if isinstance(key, str) and SURROGATE.search(key) else key
                copy[new_key] = None
                pending.append((item, copy, new_key))
            parent[slot] = copy
        elif isinstance(source, list):
            items: list[Any] = [None] * len(source)
            pending.extend((item, items, i) for i, item in enumerate(source))
            parent[slot] = items
        else:
            parent[slot] = source
    return holder[0]


def to_json_bytes_exact(value: Any) -> bytes:
    """`to_json_bytes(value)` for a value whose strings may hold lone surrogates.

    Each such string is spelled with JSON escapes (`"\\ud800"`), as the input
    line spelled it: decoding the result gives `value` back. Slow (only for
    what `to_json_bytes` refused): such strings are swapped for unique
    placeholders, the rest encoded as usual, then the placeholders replaced.
    """
    tag = uuid.uuid4().hex
    originals: list[str] = []

    def placeholder(text: str) -> str:
        originals.append(text)
        return f"{tag}-{len(originals) - 1}"

    data = to_json_bytes(map_strings(value, placeholder))
    for index, text in enumerate(originals):
        data = data.replace(to_json_bytes(f"{tag}-{index}"), json.dumps(text).encode("ascii"))
    return data


def describe_surrogate(record: Mapping[str, Any], error: str) -> str:
    """The dead letter's reason for a string that is not UTF-8, naming the column."""
    if NOT_UTF8 not in error:
        return error
    column = surrogate_column(record)
    if column is None:
        return error
    found = first_surrogate([column, record[column]]) or "\ud800"
    return (
        f"column {visible(column)!r} holds a lone surrogate (U+{ord(found):04X}), which is "
        f"not UTF-8 and which PostgreSQL cannot store; the payload keeps it as the text "
        f"{visible(found)}"
    )
