"""The benchmark workloads, generated deterministically (same seed, same bytes).

- W1: `n` records of one column signature, 12 columns (uuid key, two text ids,
  one nullable, a text enum, numeric, bigint, boolean, two date-times, a JSON
  object, a string array and an 80-character text).
- W2: the same rows spread over 5 column signatures, interleaved A, B, C, D, E.
- W3: KV-command Create entries over 5 tables (tests/kv_workload.py), in Redis
  shard keys.

W1 and W2 are written as Singer files (SCHEMA, RECORDs, a STATE every
`state_every` records) so every target reads the same bytes from stdin.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

W1_STREAM = "w1"
W1_DDL = """
CREATE TABLE {table} (
  id uuid PRIMARY KEY, account_id text NOT NULL, merchant_id text, status text,
  amount numeric, seq bigint, active boolean, created_at timestamptz, updated_at timestamptz,
  meta jsonb, tags text[], note text)
"""
W1_COLUMNS = [
    "id", "account_id", "merchant_id", "status", "amount", "seq",
    "active", "created_at", "updated_at", "meta", "tags", "note",
]  # fmt: skip
W1_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "account_id": {"type": "string"},
        "merchant_id": {"type": ["string", "null"]},
        "status": {"type": ["string", "null"]},
        "amount": {"type": ["number", "null"]},
        "seq": {"type": ["integer", "null"]},
        "active": {"type": ["boolean", "null"]},
        "created_at": {"type": ["string", "null"], "format": "date-time"},
        "updated_at": {"type": ["string", "null"], "format": "date-time"},
        "meta": {"type": ["object", "null"]},
        "tags": {"type": ["array", "null"], "items": {"type": "string"}},
        "note": {"type": ["string", "null"]},
    },
}
# W2: signature k leaves out these columns (none of them is the key).
W2_DROPPED: tuple[tuple[str, ...], ...] = (
    (),
    ("merchant_id",),
    ("note", "tags"),
    ("meta",),
    ("updated_at", "active", "status"),
)


def w1_rows(n: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    rnd = random.Random(seed)
    base = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
    for i in range(n):
        yield {
            "id": str(uuid.UUID(int=rnd.getrandbits(128))),
            "account_id": f"acc-{rnd.randrange(10_000)}",
            "merchant_id": None if i % 3 == 0 else f"m-{rnd.randrange(500)}",
            "status": rnd.choice(["NEW", "CONFIRMED", "CANCELLED"]),
            "amount": round(rnd.uniform(1, 1000), 2),
            "seq": i,
            "active": i % 2 == 0,
            "created_at": (base + dt.timedelta(seconds=i)).isoformat(),
            "updated_at": (base + dt.timedelta(seconds=i, minutes=5)).isoformat(),
            "meta": {"k": i, "v": [1, 2, 3], "src": "bench"},
            "tags": ["a", "b"] if i % 2 else ["c"],
            "note": "x" * 80,
        }


def w2_rows(n: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    for i, row in enumerate(w1_rows(n, seed)):
        for column in W2_DROPPED[i % len(W2_DROPPED)]:
            del row[column]
        yield row


def write_singer_file(
    path: Path,
    rows: Iterator[dict[str, Any]],
    *,
    stream: str = W1_STREAM,
    state_every: int = 10_000,
) -> int:
    """SCHEMA, then RECORDs with a STATE every `state_every`; returns the record count."""
    count = 0
    with path.open("wb") as out:
        schema = {"type": "SCHEMA", "stream": stream, "schema": W1_SCHEMA, "key_properties": ["id"]}
        out.write(orjson.dumps(schema) + b"\n")
        for row in rows:
            out.write(orjson.dumps({"type": "RECORD", "stream": stream, "record": row}) + b"\n")
            count += 1
            if count % state_every == 0:
                state = {"type": "STATE", "value": {"bookmarks": {stream: {"seq": count}}}}
                out.write(orjson.dumps(state) + b"\n")
        final = {"type": "STATE", "value": {"bookmarks": {stream: {"seq": count}}}}
        out.write(orjson.dumps(final) + b"\n")
    return count
