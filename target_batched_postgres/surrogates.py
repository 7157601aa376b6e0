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
from collections.abc import Mapping
from typing import Any

from target_batched_postgres.errors import RecordRejected
from target_batched_postgres.json_strings import column_with, first_string, map_strings
from target_batched_postgres.values import to_json_bytes

SURROGATE = re.compile("[\ud800-\udfff]")
NOT_UTF8 = "holds a lone surrogate, which is not UTF-8 and which PostgreSQL cannot store"


def surrogate_column(record: Mapping[str, Any]) -> str | None:
    """The first column (or `_sdc_where` / `_sdc_model`) whose name or value holds one."""
    return column_with(record, SURROGATE.search)


def not_utf8(exc: UnicodeEncodeError) -> RecordRejected:
    """A write refused because a string in its records is not UTF-8: fall back, dead-letter."""
    return RecordRejected(f"a value {NOT_UTF8} ({exc})")


def visible(text: str) -> str:
    """`text` with each lone surrogate as the visible text `\\udXXX`."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def escape_surrogates(value: Any) -> Any:
    """`value` with each lone surrogate in its strings (keys too) as visible text; any depth."""
    return map_strings(value, SURROGATE.search, visible)


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

    data = to_json_bytes(map_strings(value, SURROGATE.search, placeholder))
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
    text = first_string([column, record[column]], SURROGATE.search) or "\ud800"
    found = next(char for char in text if "\ud800" <= char <= "\udfff")
    return (
        f"column {visible(column)!r} holds a lone surrogate (U+{ord(found):04X}), which is "
        f"not UTF-8 and which PostgreSQL cannot store; the payload keeps it as the text "
        f"{visible(found)}"
    )
