"""The practical limits the benchmark compares against, run as their own processes.

    python -m bench.raw copy --url URL --schema S --file W1.singer --batch N
    python -m bench.raw xrange --url REDIS_URL --pattern 'bench-stream{shard-*}'

`copy`: read a Singer file, orjson-decode each RECORD, COPY the rows into the
pre-created W1 table, committing every `--batch` rows (0: one transaction).
No conflict handling, no fallback, no Kafka: what a hand-rolled loader does.

`xrange`: read every entry of the matching stream keys with XRANGE (1,000 at
a time), zstd-decompress framed payloads and orjson-decode each: the least a
tap must do. Prints the entry count.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson
import psycopg
import redis
import zstandard
from psycopg import sql

from bench.workloads import W1_COLUMNS

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _array_literal(values: list[str] | None) -> str | None:
    if values is None:
        return None
    return (
        "{"
        + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
        + "}"
    )


def raw_copy(url: str, schema: str, path: str, batch: int) -> int:
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(schema, "w1"), sql.SQL(", ").join(map(sql.Identifier, W1_COLUMNS))
    )
    rows: list[list[Any]] = []
    total = 0
    with psycopg.connect(url, autocommit=True) as conn, open(path, "rb") as lines:

        def flush() -> None:
            with conn.transaction(), conn.cursor() as cur, cur.copy(copy_sql) as copy:
                for row in rows:
                    copy.write_row(row)
            rows.clear()

        for line in lines:
            message = orjson.loads(line)
            if message["type"] != "RECORD":
                continue
            r = message["record"]
            meta = r.get("meta")
            rows.append(
                [
                    r.get("id"), r.get("account_id"), r.get("merchant_id"), r.get("status"),
                    r.get("amount"), r.get("seq"), r.get("active"), r.get("created_at"),
                    r.get("updated_at"), None if meta is None else orjson.dumps(meta).decode(),
                    _array_literal(r.get("tags")), r.get("note"),
                ]
            )  # fmt: skip
            total += 1
            if batch and len(rows) >= batch:
                flush()
        if rows:
            flush()
    return total


def raw_xrange(url: str, pattern: str) -> int:
    client = redis.Redis.from_url(url)
    decompress = zstandard.ZstdDecompressor().decompress
    count = 0
    for key in sorted(client.scan_iter(match=pattern, _type="stream")):
        cursor = "-"
        while True:
            entries: Any = client.xrange(key, min=cursor, count=1000)
            if not entries:
                break
            for _entry_id, fields in entries:
                payload = fields[b"command"]
                if payload.startswith(ZSTD_MAGIC):
                    payload = decompress(payload)
                orjson.loads(payload)
                count += 1
            cursor = "(" + entries[-1][0].decode()
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="what", required=True)
    copy = sub.add_parser("copy")
    copy.add_argument("--url", required=True)
    copy.add_argument("--schema", required=True)
    copy.add_argument("--file", required=True)
    copy.add_argument("--batch", type=int, default=0)
    xr = sub.add_parser("xrange")
    xr.add_argument("--url", required=True)
    xr.add_argument("--pattern", required=True)
    args = parser.parse_args(argv)
    if args.what == "copy":
        print(raw_copy(args.url, args.schema, args.file, args.batch))
    else:
        print(raw_xrange(args.url, args.pattern))
    return 0


if __name__ == "__main__":
    sys.exit(main())
