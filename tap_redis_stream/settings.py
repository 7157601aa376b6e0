"""The tap's settings schema (for `--about`, Meltano and TAP_REDIS_STREAM_* variables)."""

from __future__ import annotations

from singer_sdk import typing as th

ENTRY_FORMATS = ["euler_kv", "fields", "json"]

CONFIG_SCHEMA = th.PropertiesList(
    th.Property(
        "redis_url",
        th.StringType,
        required=True,
        secret=True,
        description="Redis URL: `redis://[user:password@]host:port/db` or `rediss://` for TLS.",
    ),
    th.Property(
        "stream_keys",
        th.ArrayType(th.StringType),
        required=True,
        description=(
            "Stream keys to read: names or glob patterns resolved with SCAN, e.g. "
            "`rider-db-sync-stream{shard-*}`."
        ),
    ),
    th.Property(
        "entry_format",
        th.StringType,
        default="euler_kv",
        allowed_values=ENTRY_FORMATS,
        description=(
            "`euler_kv`: the KV-connector command envelope of the old drainer; `fields`: the "
            "entry's field/value pairs are the row; `json`: one field holds a JSON object row."
        ),
    ),
    th.Property(
        "table_field",
        th.StringType,
        default="table",
        description="`fields`/`json`: the entry field naming the destination table.",
    ),
    th.Property(
        "table_template",
        th.StringType,
        description=(
            "`fields`/`json`: table name from the stream key instead of a field; `{stream}` is "
            "the key with its `{...}` hash tag removed (e.g. `orders{shard-1}` -> `orders`)."
        ),
    ),
    th.Property(
        "json_field",
        th.StringType,
        default="data",
        description="`json`: the entry field holding the JSON object.",
    ),
    th.Property(
        "key_properties",
        th.ArrayType(th.StringType),
        default=["id"],
        description="Primary-key columns of every table (used when a table has them all).",
    ),
    th.Property(
        "read_count",
        th.IntegerType(minimum=1),
        default=1000,
        description="Entries per XREAD call.",
    ),
    th.Property(
        "decode_workers",
        th.IntegerType(minimum=0, maximum=64),
        default=0,
        description=(
            "Processes that decode entries and encode their records while the tap reads "
            "on (0: in the tap's own process). Each read batch goes whole to the next "
            "worker; the messages are the same. Worth it when the tap has cores to spare "
            "(README, Performance)."
        ),
    ),
    th.Property(
        "start_from",
        th.StringType,
        default="earliest",
        allowed_values=["earliest", "latest"],
        description=(
            "Where a key without a bookmark starts: its first entry, or after its last "
            "(`latest`). A key created while a follow run goes on starts at its first entry."
        ),
    ),
    th.Property(
        "on_parse_error",
        th.StringType,
        default="stop",
        allowed_values=["stop", "dead_letter"],
        description=(
            "An entry that cannot be decoded: `stop` the tap (non-zero exit, bookmark before "
            "it), or `dead_letter` it to `failed_stream` and go on."
        ),
    ),
    th.Property(
        "failed_stream",
        th.StringType,
        default="redis-stream-failed-entries",
        description="Stream that receives undecodable entries with `on_parse_error: dead_letter`.",
    ),
    th.Property(
        "record_limit",
        th.IntegerType(minimum=1),
        description="Stop after this many entries (a STATE covers exactly those).",
    ),
    th.Property(
        "shard_index",
        th.IntegerType(minimum=0),
        default=0,
        description="This worker's index among `shard_count` workers.",
    ),
    th.Property(
        "shard_count",
        th.IntegerType(minimum=1),
        default=1,
        description=(
            "Workers sharing the matched keys; each key goes to one (CRC32 of the key modulo "
            "the count). A worker's STATE holds its own keys only."
        ),
    ),
    th.Property(
        "follow",
        th.BooleanType,
        default=False,
        description=(
            "false: read up to the last entry each key had at start, then exit. true: block "
            "for new entries until SIGTERM."
        ),
    ),
    th.Property(
        "heartbeat_seconds",
        th.NumberType(exclusive_minimum=0),
        default=5,
        description="Follow mode: emit STATE this often while idle (lets the target flush by age).",
    ),
    th.Property(
        "trim_acknowledged",
        th.BooleanType,
        default=False,
        description=(
            "At start, delete entries at or below the incoming state's bookmarks (durable: the "
            "target emits state only after committing). Never one entry beyond."
        ),
    ),
    th.Property(
        "redis_mode",
        th.StringType,
        default="auto",
        allowed_values=["auto", "standalone", "cluster"],
        description=(
            "`auto`: ask the server (`INFO cluster`) and use the Redis Cluster client when "
            "`cluster_enabled:1`; `standalone` or `cluster` to say so. In a cluster `redis_url` "
            "names any node; SCAN runs on every primary and each key is read on its own."
        ),
    ),
    th.Property(
        "redis_reconnect_timeout_seconds",
        th.NumberType(exclusive_minimum=0),
        default=300,
        description=(
            "Mid-run, a Redis call that fails to connect is retried with backoff (0.1 s doubling "
            "to 5 s) for this long, then the tap exits non-zero naming the URL (never its "
            "password). Connecting at start is not retried."
        ),
    ),
    th.Property(
        "shard_locks",
        th.BooleanType,
        default=False,
        description=(
            "Take the old drainer's lock `SET <stream-key>_lock <token> NX PX` before reading a "
            "key, refresh it while working, skip a key whose lock is held elsewhere this round, "
            "release on exit: lets this tap and the drainer run side by side."
        ),
    ),
    th.Property(
        "shard_lock_ttl_ms",
        th.IntegerType(minimum=1000),
        default=120000,
        description=(
            "Expiry of a shard lock (the drainer's 120000); refreshed every third of it. In "
            "follow mode it must be at least 3 x `heartbeat_seconds`."
        ),
    ),
    th.Property(
        "metrics_port",
        th.IntegerType(minimum=0, maximum=65535),
        description=(
            "Serve Prometheus metrics on `/metrics` and a health check on `/healthz` (200 while "
            "the reader loop is alive) on this port; 0 picks a free one (logged). Unset: off."
        ),
    ),
    th.Property(
        "metrics_host",
        th.StringType,
        default="127.0.0.1",
        description="Address the metrics endpoint binds (`0.0.0.0` to expose it).",
    ),
    th.Property(
        "discovery_sample_size",
        th.IntegerType(minimum=1),
        default=1000,
        description="`--discover`: entries sampled per stream key to list tables and columns.",
    ),
).to_dict()
