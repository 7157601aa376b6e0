"""Render Python values as the text PostgreSQL casts into a column's own type.

Batches are sent as one text array per column and cast by PostgreSQL
(`::type`), exactly as the old drainer's literals were: an existing table's
column types are respected, whatever the SCHEMA says.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
from collections.abc import Callable
from typing import Any

import msgspec

from target_batched_postgres.pgtypes import Kind

Encoder = Callable[[Any], str | None]


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# Decimals (every non-integer number the target reads) are written as exact
# JSON numbers, datetimes in RFC 3339 form.
_ENCODER = msgspec.json.Encoder(enc_hook=_json_default, decimal_format="number")


def to_json_bytes(value: Any) -> bytes:
    """JSON for Kafka values, jsonb and batches: exact Decimals, ISO datetimes."""
    return _ENCODER.encode(value)


def _scalar(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if isinstance(value, int | decimal.Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dict | list):
        return to_json_bytes(value).decode()
    return str(value)


def _json(value: Any) -> str | None:
    if value is None:
        return None
    # A string is taken as JSON text already (the KV format sends JSON columns
    # as strings whose body is JSON), as the drainer's literal was.
    if isinstance(value, str):
        return value
    return to_json_bytes(value).decode()


def _array_element(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, list):
        return "{" + ",".join(_array_element(v) for v in value) + "}"
    text = _scalar(value) or ""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _array(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):
        return _array_element(value)
    # Already an array literal such as '{a,b}', or something PostgreSQL rejects.
    return _scalar(value)


ENCODERS: dict[Kind, Encoder] = {Kind.SCALAR: _scalar, Kind.JSON: _json, Kind.ARRAY: _array}
