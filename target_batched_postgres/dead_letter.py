"""Dead letters: a rejected record, why, and where it came from."""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from target_batched_postgres import control
from target_batched_postgres.nul_bytes import NUL, describe_nul, replace_nul
from target_batched_postgres.surrogates import describe_surrogate, escape_surrogates, visible
from target_batched_postgres.values import to_json_bytes

VISIBLE_NUL = "\\u0000"
_SHORT = reprlib.Repr()  # bounded depth and length: a text of any record
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist = 50, 100, 100
_SHORT.maxstring, _SHORT.maxother = 10_000, 1_000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    table: str
    record: Mapping[str, Any]
    error: str
    sqlstate: str | None

    @property
    def reason(self) -> str:
        """PostgreSQL's error, naming the column when a NUL byte or a lone surrogate caused it."""
        return describe_surrogate(self.record, describe_nul(self.record, self.error, self.sqlstate))

    def params(self) -> tuple[Any, ...]:
        """Parameters of `sql.build_insert_dead_letter`, in its column order."""
        return (
            _storable(self.table),
            dead_letter_payload(self.record),
            _storable(self.reason),
            self.sqlstate,
            _text_or_none(self.record.get(control.SOURCE_STREAM)),
            _text_or_none(self.record.get(control.SOURCE_ENTRY_ID)),
        )


def _storable(text: str) -> str:
    """Text PostgreSQL can store: a NUL byte kept as the visible `\\u0000`, a lone
    surrogate as the visible `\\udXXX`."""
    text = text.replace(NUL, VISIBLE_NUL)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return visible(text)
    return text


def _text_or_none(value: Any) -> str | None:
    return None if value is None else _storable(str(value))


def describe_source(record: Mapping[str, Any]) -> str:
    stream = record.get(control.SOURCE_STREAM)
    entry = record.get(control.SOURCE_ENTRY_ID)
    if stream is None and entry is None:
        return "no source entry"
    return f"source stream {stream!r}, entry {entry!r}"


def dead_letter_payload(record: Mapping[str, Any]) -> str:
    """The record as JSON text for the jsonb payload column; storing it never fails.

    jsonb cannot hold U+0000: each NUL byte is kept as the visible text
    `\\u0000` (a backslash and five characters), so the payload still shows
    where it was; jsonb cannot hold a lone surrogate either (not even as the
    escape `\\ud800`): each is kept as that visible text. A record JSON cannot
    hold (nested deeper than 254 levels) is kept as a shortened Python text of it.
    """
    record = replace_nul(dict(record), VISIBLE_NUL)
    try:
        return _json_text(record)
    except TypeError as exc:  # orjson: nested too deeply
        short = visible(_SHORT.repr(record))
        return to_json_bytes({"unencodable_record": short, "why": str(exc)}).decode()


def _json_text(record: Mapping[str, Any]) -> str:
    try:
        return to_json_bytes(record).decode()
    except UnicodeEncodeError:  # a lone surrogate
        return to_json_bytes(escape_surrogates(record)).decode()
