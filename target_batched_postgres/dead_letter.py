"""Dead letters: a rejected record, why, and where it came from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from target_batched_postgres import control
from target_batched_postgres.nul_bytes import describe_nul
from target_batched_postgres.values import to_json_bytes


@dataclass(frozen=True, slots=True)
class DeadLetter:
    table: str
    record: Mapping[str, Any]
    error: str
    sqlstate: str | None

    @property
    def reason(self) -> str:
        """PostgreSQL's error, naming the column when a NUL byte caused it."""
        return describe_nul(self.record, self.error, self.sqlstate)

    def params(self) -> tuple[Any, ...]:
        """Parameters of `sql.build_insert_dead_letter`, in its column order."""
        return (
            self.table,
            dead_letter_payload(self.record),
            self.reason,
            self.sqlstate,
            _text_or_none(self.record.get(control.SOURCE_STREAM)),
            _text_or_none(self.record.get(control.SOURCE_ENTRY_ID)),
        )


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def describe_source(record: Mapping[str, Any]) -> str:
    stream = record.get(control.SOURCE_STREAM)
    entry = record.get(control.SOURCE_ENTRY_ID)
    if stream is None and entry is None:
        return "no source entry"
    return f"source stream {stream!r}, entry {entry!r}"


def dead_letter_payload(record: Mapping[str, Any]) -> str:
    """The record as JSON text for the jsonb payload column.

    jsonb cannot hold `\\u0000`; such escapes are kept as the visible text
    `\\u0000` so the payload still shows where the NUL byte was.
    """
    text = to_json_bytes(dict(record)).decode()
    return text.replace("\\u0000", "\\\\u0000")
