"""tap-redis-stream: Redis Stream entries as Singer SCHEMA / RECORD / STATE messages."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Mapping
from types import FrameType
from typing import Any, ClassVar

from jsonschema import ValidationError
from singer_sdk import Stream, Tap
from singer_sdk.exceptions import ConfigValidationError, MapperNotInitialized
from singer_sdk.helpers.capabilities import (
    CapabilitiesEnum,
    PluginCapabilities,
    TapCapabilities,
)
from singer_sdk.plugin_base import JSONSchemaValidator, PluginBase, _format_validation_error

from tap_redis_stream.client import RedisRefused, RedisUnavailable, StreamClient
from tap_redis_stream.decode_pool import DecodePool
from tap_redis_stream.entries import EntryDecoder, EntryParseError
from tap_redis_stream.entries.euler_kv import EulerKvDecoder
from tap_redis_stream.entries.fields import FieldsDecoder, JsonDecoder
from tap_redis_stream.lag import LagTracker
from tap_redis_stream.locks import ShardLocks
from tap_redis_stream.messages import MessageWriter, TableSchema
from tap_redis_stream.metrics_server import MetricsServer, TapMetrics
from tap_redis_stream.reader import Reader, ReaderSettings, bookmarks_from_state
from tap_redis_stream.settings import CONFIG_SCHEMA


def _config_error_reason(error: ValidationError) -> str:
    """What a setting's value fails, from the schema alone (never the value)."""
    if error.validator == "type":
        types = error.validator_value
        names = types if isinstance(types, list) else [types]
        return "not of type " + ", ".join(repr(name) for name in names)
    return f"fails {error.validator!r}: {error.validator_value!r}"


def _secret_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, dict):
        return [s for item in value.items() for part in item for s in _secret_strings(part)]
    if isinstance(value, list | tuple):
        return [s for item in value for s in _secret_strings(item)]
    return [repr(value)] if value is not None else []


def describe_config_error(
    error: ValidationError, secrets: frozenset[str], config: Mapping[str, Any]
) -> str:
    """The SDK's message for a config error, but a secret setting's value is never in it.

    jsonschema quotes the value (`'<value>' is not of type 'object'`): for a
    property marked `secret` the message names the setting and the reason only.
    A twin of `target_batched_postgres.target.describe_config_error` (and of its
    `_validate_config`): the two plugin packages share no module (see control.py).
    """
    path = list(error.path)
    if path and path[0] in secrets:
        where = "".join(f"[{part!r}]" for part in path)
        return f"config{where}: invalid value (not shown: secret): {_config_error_reason(error)}"
    message = _format_validation_error(error)
    if not path:  # about the whole config: its message may quote any value
        leaked = [s for name in secrets for s in _secret_strings(config.get(name)) if s in message]
        if leaked:
            return f"config: {_config_error_reason(error)} (message not shown: it quotes a secret)"
    return message


class TableStream(Stream):
    """A destination table, for discovery and catalogs; records come from the Reader."""

    def __init__(self, tap: Tap, table: TableSchema) -> None:
        super().__init__(tap, schema=table.json_schema(), name=table.name)
        self.primary_keys = table.key_properties

    def get_records(self, context: Any) -> Any:
        # One pass over the Redis streams feeds every table (TapRedisStream.sync_all).
        return iter(())


GC_THRESHOLDS = (50_000, 20, 10)  # young, middle, full: see sync_all()


class TapRedisStream(Tap):
    """Reads Redis Streams (plain fields, JSON, or the KV drainer's commands)."""

    cli_run: ClassVar[bool] = False  # set by invoke(): see sync_all()

    name = "tap-redis-stream"
    package_name = "redis-stream-drainer"  # the distribution: its version in logs and --about
    config_jsonschema = CONFIG_SCHEMA
    # Only what the one-pass reader honours: no stream maps, flattening or
    # BATCH messages (those belong to the SDK's per-stream sync).
    capabilities: ClassVar[list[CapabilitiesEnum]] = [
        TapCapabilities.CATALOG,
        TapCapabilities.STATE,
        TapCapabilities.DISCOVER,
        PluginCapabilities.ABOUT,
        PluginCapabilities.STRUCTURED_LOGGING,
    ]

    @classmethod
    def append_builtin_config(cls, config_jsonschema: dict) -> None:
        super().append_builtin_config(config_jsonschema)
        for name in list(config_jsonschema["properties"]):
            if name.startswith(("stream_map", "faker_config", "flattening_")):
                del config_jsonschema["properties"][name]

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        """The SDK's config validation, with messages that never show a secret value."""
        schema = self.config_jsonschema
        self.append_builtin_config(schema)
        secrets = frozenset(
            name for name, prop in schema.get("properties", {}).items() if prop.get("secret")
        )
        errors = [
            describe_config_error(error, secrets, self._config)
            for error in JSONSchemaValidator(schema).iter_errors(self._config)
        ]
        if errors:
            if raise_errors:
                raise ConfigValidationError(
                    "Config validation failed", errors=errors, schema=schema
                )
            self.logger.warning("Config validation failed")
        return errors

    _stop = False
    _input_state: dict[str, Any] | None = None

    _mapped = False

    def setup_mapper(self) -> None:
        # The SDK builds the catalog here, which without `--catalog` means
        # discovery: sampling `discovery_sample_size` entries of every key (not
        # only this worker's) before each sync. The one-pass reader writes its
        # own SCHEMA messages, so the streams are registered with the mapper
        # only when something asks for them (discovery, the SDK's test suites).
        PluginBase.setup_mapper(self)

    @property
    def streams(self) -> dict[str, Stream]:
        streams: dict[str, Stream] = Tap.streams.fget(self)  # type: ignore[attr-defined]
        if not self._mapped:
            self._mapped = True
            with contextlib.suppress(MapperNotInitialized):  # `--discover` sets up none
                self.mapper.register_raw_streams_from_catalog(self.catalog)
        return streams

    def load_state(self, state: dict[str, Any]) -> None:
        # Our bookmarks are per Redis key, in (ms, seq) order: kept apart from
        # the SDK's per-stream bookmarks, whose ordering compares strings.
        self._input_state = state

    def _setting(self, name: str) -> Any:
        value = self.config.get(name)
        return CONFIG_SCHEMA["properties"][name].get("default") if value is None else value

    def decoder(self) -> EntryDecoder:
        kind = self._setting("entry_format")
        if kind == "euler_kv":
            return EulerKvDecoder()
        table_field = str(self._setting("table_field"))
        template = self.config.get("table_template")
        if kind == "json":
            return JsonDecoder(table_field, template, str(self._setting("json_field")))
        return FieldsDecoder(table_field, template)

    def client(self) -> StreamClient:
        follow = bool(self._setting("follow"))
        block = float(self._setting("heartbeat_seconds")) if follow else 0.0
        return StreamClient(
            self.config["redis_url"],
            mode=str(self._setting("redis_mode")),
            block_timeout_seconds=block,
        )

    def discover_streams(self) -> list[Stream]:
        """Sample each key's first entries to list tables and their columns."""
        client = self.client()
        decoder = self.decoder()
        keys = [str(k) for k in self.config.get("stream_keys") or []]
        tables: dict[str, TableSchema] = {}
        sample = int(self._setting("discovery_sample_size"))
        try:
            for key in client.resolve(keys):
                for entry_id, fields in client.sample(key, sample):
                    try:
                        operation = decoder.decode(key, fields)
                    except EntryParseError as exc:
                        self.logger.warning("Discovery skips %s of %r: %s", entry_id, key, exc)
                        continue
                    table = tables.setdefault(
                        operation.table,
                        TableSchema(operation.table, list(self._setting("key_properties"))),
                    )
                    table.observe(operation.row)
        finally:
            client.close()
        return [TableStream(self, table) for table in tables.values()]

    @classmethod
    def invoke(cls, **options: Any) -> None:
        """The command line's run. Only it tunes the garbage collector: a tap
        run inside another program (the tests) leaves that program's as it was."""
        thresholds = gc.get_threshold()
        cls.cli_run = True
        try:
            super().invoke(**options)
        finally:
            cls.cli_run = False
            gc.unfreeze()
            gc.set_threshold(*thresholds)

    # One pass over the Redis streams emits every table's records in entry
    # order; the SDK's stream-by-stream sync cannot interleave them.
    def sync_all(self) -> None:  # type: ignore[misc]
        settings = ReaderSettings(
            stream_keys=[str(k) for k in self.config.get("stream_keys") or []],
            read_count=int(self._setting("read_count")),
            start_from=str(self._setting("start_from")),
            on_parse_error=str(self._setting("on_parse_error")),
            failed_stream=str(self._setting("failed_stream")),
            record_limit=self.config.get("record_limit"),
            shard_index=int(self._setting("shard_index")),
            shard_count=int(self._setting("shard_count")),
            follow=bool(self._setting("follow")),
            heartbeat_seconds=float(self._setting("heartbeat_seconds")),
            trim_acknowledged=bool(self._setting("trim_acknowledged")),
        )
        if settings.shard_index >= settings.shard_count:
            raise SystemExit(
                f"shard_index {settings.shard_index} must be below "
                f"shard_count {settings.shard_count}"
            )
        lock_ttl_ms = int(self._setting("shard_lock_ttl_ms"))
        locking = bool(self._setting("shard_locks"))
        if locking and settings.follow and lock_ttl_ms < 3000 * settings.heartbeat_seconds:
            raise SystemExit(
                f"shard_lock_ttl_ms {lock_ttl_ms} must be at least 3 x heartbeat_seconds "
                f"({settings.heartbeat_seconds:g} s): a follow round may block that long"
            )
        if self.cli_run:  # the process is this run's: its collector is tuned
            # The objects alive now (the SDK, its schemas, the settings)
            # stay alive: frozen, the garbage collector stops traversing
            # them in every full collection the per-entry dicts trigger
            # (~10% of a run). And fewer collections (young: one per
            # 50,000 allocations, not 700): on W3, 1,486 young, 135 middle
            # and 12 full ones took 0.10 s; 141, 13 and 1 take 0.03 s.
            # Entries hold no reference cycles. Decode workers inherit both.
            gc.freeze()
            gc.set_threshold(*GC_THRESHOLDS)
        decoder = self.decoder()
        writer = MessageWriter(
            list(self._setting("key_properties")), deselected=self.deselected_tables()
        )
        workers = int(self._setting("decode_workers"))
        pool = None
        if workers > 0:
            # Forked first, while the process has no other thread (the metrics
            # server's) and no socket (Redis, the metrics port) to hand down.
            pool = DecodePool(workers, decoder, writer.deselected)
            pool.start()
        try:
            client = self.client()
            metrics = TapMetrics(heartbeat_seconds=settings.heartbeat_seconds)
            server = self.metrics_server(metrics)
            try:
                self.connect(client)
                reader = Reader(
                    settings,
                    client,
                    decoder,
                    writer,
                    bookmarks=bookmarks_from_state(self._input_state),
                    stop_requested=lambda: self._stop,
                    locks=ShardLocks(client, lock_ttl_ms, metrics) if locking else None,
                    metrics=metrics,
                    lag=LagTracker(client.count_entries) if server is not None else None,
                    reconnect_timeout_seconds=float(
                        self._setting("redis_reconnect_timeout_seconds")
                    ),
                    pool=pool,
                )
                reader.run()
                reader.writer.state(reader.state())
                self.logger.info(
                    "Read %d entries, wrote %d records",
                    reader.entries_seen,
                    reader.writer.records_written,
                )
            finally:
                client.close()
                if server is not None:
                    server.stop()
        finally:
            if pool is not None:
                pool.close()

    def connect(self, client: StreamClient) -> None:
        """Connect once at start; a failure names the server (not its password) and exits."""
        try:
            client.connect()
        except (RedisUnavailable, RedisRefused) as exc:
            raise SystemExit(f"tap-redis-stream: cannot use redis_url: {exc}") from exc
        self.logger.info(
            "Connected to %s %s", "Redis Cluster" if client.cluster else "Redis", client.display_url
        )

    def metrics_server(self, metrics: TapMetrics) -> MetricsServer | None:
        port = self.config.get("metrics_port")
        if port is None:
            return None
        host = str(self._setting("metrics_host"))
        try:
            server = MetricsServer(metrics, host, int(port))
        except OSError as exc:
            raise SystemExit(
                f"tap-redis-stream: cannot serve metrics on {host}:{port} (metrics_host, "
                f"metrics_port): {exc}"
            ) from exc
        server.start()
        return server

    # Final in the SDK, but its per-stream loop would read nothing here.
    def run_sync_dry_run(  # type: ignore[misc]
        self, dry_run_record_limit: int | None = 1, streams: Any = None
    ) -> bool:
        """A dry run is a bounded read: the per-stream limit cannot apply to one pass
        that interleaves every table, so it reads what a scheduled run would."""
        self.sync_all()
        return True

    def deselected_tables(self) -> set[str]:
        """Tables an input catalog explicitly deselects; tables it does not list pass,
        so a table that first appears after discovery is never dropped silently."""
        catalog = self.input_catalog
        if catalog is None:
            return set()
        return {
            entry.tap_stream_id
            for entry in catalog.streams
            if entry.metadata.root.selected is False
        }

    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:
        # Graceful: the reader finishes its batch, writes a final STATE, exits 0.
        self.logger.info("Received signal %d: finishing the current batch", signum)
        self._stop = True
