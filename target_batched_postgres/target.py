"""target-batched-postgres: the drainer's batch create as a Singer target."""

from __future__ import annotations

import copy
import gc
import logging
import sys
import threading
import time
from collections.abc import Mapping
from functools import cached_property
from pathlib import PurePath
from typing import Any, ClassVar

from jsonschema import ValidationError
from singer_sdk import Target
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.mapper import SameRecordTransform
from singer_sdk.plugin_base import JSONSchemaValidator, _format_validation_error

from target_batched_postgres import control
from target_batched_postgres.batcher import Bucket, TableBatcher
from target_batched_postgres.checkpoint import Checkpointer
from target_batched_postgres.dead_letter import describe_source
from target_batched_postgres.errors import ConfigError, FatalError
from target_batched_postgres.faults import fault_point
from target_batched_postgres.flush import Flusher, TableRoute
from target_batched_postgres.identifiers import table_name_for_stream, topic_name
from target_batched_postgres.kafka_writer import KafkaPublisher
from target_batched_postgres.metrics import DrainerMetric, Metrics
from target_batched_postgres.nul_bytes import NulBytes, strip_nul
from target_batched_postgres.pipeline import Mergeable, WritePipeline
from target_batched_postgres.postgres_writer import PostgresWriter, TableSpec
from target_batched_postgres.reader import FastSingerReader
from target_batched_postgres.retry import RetryPolicy
from target_batched_postgres.settings import (
    CONFIG_SCHEMA,
    apply_env_switches,
    check_combinations,
    setting,
)
from target_batched_postgres.signature import data_columns
from target_batched_postgres.sink import BatchedPostgresSink
from target_batched_postgres.sql import OnConflict
from target_batched_postgres.surrogates import to_json_bytes_exact
from target_batched_postgres.values import to_json_bytes

# At most this often the open buckets are scanned for one past
# max_batch_age_seconds (each record costs one clock read and one comparison).
AGE_CHECK_INTERVAL_SECONDS = 0.1
MAX_CACHED_SIGNATURES = 4096
VALIDATE_RECORDS_DESCRIPTION = (
    "Also validate each record against its SCHEMA with jsonschema (off by default). "
    "PostgreSQL checks every value as it casts it into its column, and a record it "
    "rejects goes to the dead-letter table with the reason; jsonschema validation "
    "only adds log lines, and costs about half the throughput."
)


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
    A twin of `tap_redis_stream.tap.describe_config_error` (and of its
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


GC_THRESHOLDS = (50_000, 20, 10)  # young, middle, full: see listen()


class TargetBatchedPostgres(Target):
    """Batches by column signature, publishes to Kafka, then writes PostgreSQL."""

    cli_run: ClassVar[bool] = False  # set by invoke(): see listen()

    name = "target-batched-postgres"
    package_name = "redis-stream-drainer"  # the distribution: its version in logs and --about
    config_jsonschema = CONFIG_SCHEMA
    default_sink_class = BatchedPostgresSink
    message_reader_class = FastSingerReader

    def __init__(
        self,
        *,
        config: dict | PurePath | str | list[PurePath | str] | None = None,
        parse_env_config: bool = False,
        validate_config: bool = True,
        setup_mapper: bool = True,
    ) -> None:
        super().__init__(
            config=config,
            parse_env_config=parse_env_config,
            validate_config=validate_config,
            setup_mapper=setup_mapper,
        )
        try:
            apply_env_switches(self._config)
            check_combinations(self._config)
        except ConfigError as exc:
            raise ConfigValidationError(str(exc), errors=[str(exc)]) from exc
        self._validate_config(raise_errors=validate_config)
        # Sinks come and go with SCHEMA changes; routes (and their open
        # buckets) live here so a new SCHEMA never forces a flush.
        self.routes: dict[str, TableRoute] = {}
        # Streams whose names map to one table ("Orders", "orders") share it:
        # a change (update or delete) waits for the open buckets of all of them.
        self._routes_by_table: dict[str, list[TableRoute]] = {}
        self.drainer_metrics = Metrics()
        self.checkpoints = Checkpointer()
        self._records_seen = 0
        self._flusher: Flusher | None = None
        self._age_check_interval = min(AGE_CHECK_INTERVAL_SECONDS, self.max_batch_age_seconds)
        self._next_age_check = time.monotonic() + self._age_check_interval
        # The control properties of the record on the SDK's path, kept away
        # from stream maps and flattening (see _process_mapped_record).
        self.held_controls: dict[str, Any] | None = None
        self.max_parallelism = 1  # one connection, one producer: drain serially
        self._strip_nul = self._setting("nul_bytes") == NulBytes.STRIP
        # Sinks whose records may skip the SDK's per-record steps (see
        # _process_record_message); dropped whenever a SCHEMA arrives.
        self._direct_sinks: dict[str, BatchedPostgresSink | None] = {}
        # Column signature by the record's key order (taps repeat one order).
        self._signatures: dict[tuple[str, ...], tuple[str, ...]] = {}
        # STATE goes out from both threads: the main one after it submits a
        # flush or reads a STATE, the writer as soon as a flush finishes (so a
        # checkpoint does not wait for more input). `_open_floor` is the main
        # thread's published lower bound of the oldest record in an open bucket.
        self._state_lock = threading.Lock()
        self._open_floor: int | None = None
        # Batches waiting for PostgreSQL share a statement, up to this many rows.
        merge_batches = int(self._setting("max_batches_per_statement"))
        merge_limit = merge_batches * self.batch_size if self.batched and merge_batches > 1 else 0
        self.pipeline = WritePipeline(
            on_done=self._emit_safe_state,
            merge_limit=merge_limit,
            write_depth=merge_batches,
            publish_many=self._publish,
            send_ahead=int(self._setting("max_statements_in_flight")),
        )

    # -- settings ---------------------------------------------------------------

    # The SDK's generic `load_method` and `batch_size_rows` would be ignored
    # here: `on_conflict` and `insert_batch_size` say what this target does.
    _UNSUPPORTED_BUILTINS = ("load_method", "batch_size_rows")

    @classmethod
    def append_builtin_config(cls, config_jsonschema: dict) -> None:
        super().append_builtin_config(config_jsonschema)
        for name in cls._UNSUPPORTED_BUILTINS:
            config_jsonschema["properties"].pop(name, None)
        validate = config_jsonschema["properties"].get("validate_records")
        if validate is not None:
            validate["default"] = False
            validate["description"] = VALIDATE_RECORDS_DESCRIPTION

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

    def _setting(self, name: str) -> Any:
        return setting(self.config, name)

    @property
    def validate_records(self) -> bool:
        return bool(self.config.get("validate_records", False))

    @property
    def batch_size(self) -> int:
        return int(self._setting("insert_batch_size"))

    @cached_property
    def batched(self) -> bool:
        return bool(self._setting("batched_create_enabled"))

    @property
    def max_batch_age_seconds(self) -> float:
        return float(self._setting("max_batch_age_seconds"))

    # -- lifecycle --------------------------------------------------------------

    @property
    def flusher(self) -> Flusher:
        if self._flusher is None:
            self._flusher = self._build_flusher()
        return self._flusher

    def _build_flusher(self) -> Flusher:
        retry = RetryPolicy(
            max_attempts=int(self._setting("max_attempts")),
            backoff_seconds=float(self._setting("retry_backoff_seconds")),
        )
        postgres = PostgresWriter(
            self.config.get("database_url") or "",
            str(self._setting("default_target_schema")),
            dead_letter_table=str(self._setting("dead_letter_table")),
            on_conflict=OnConflict(self._setting("on_conflict")),
            fail_on_record_error=self._setting("on_record_error") == "fail",
            retry=retry,
            metrics=self.drainer_metrics,
            statement_timeout_seconds=float(self._setting("statement_timeout_seconds")),
            heap_warmup_mib=int(self._setting("server_heap_warmup_mib")),
        )
        kafka = None
        if self._setting("kafka_enabled"):
            servers = self.config.get("kafka_bootstrap_servers")
            if not servers:
                raise ConfigError("kafka_bootstrap_servers is required when kafka_enabled is true")
            kafka = KafkaPublisher(
                servers,
                self._setting("kafka_producer_config") or {},
                delivery_timeout_seconds=float(self._setting("kafka_delivery_timeout_seconds")),
                retry=retry,
                metrics=self.drainer_metrics,
            )
        return Flusher(kafka, postgres, self.drainer_metrics)

    def preflight(self) -> None:
        """Check every server before reading input: fail fast, naming the setting."""
        flusher = self.flusher
        flusher.postgres.preflight()
        if flusher.kafka is not None:
            flusher.kafka.preflight()

    # The SDK marks listen() final but has no hook that runs before input is
    # read; preflight must run there so bad settings fail before any input.
    def listen(self, file_input: Any = None) -> None:  # type: ignore[misc]
        self.preflight()
        if self.cli_run:  # the process is this run's: its collector is tuned for it
            # What is alive now (the SDK, settings, connections) lives to the
            # end: frozen, full collections stop traversing it (~5% of W1).
            gc.freeze()
            # The records waiting in buckets and in flight survive the young
            # collections, which Python's default (one per 700 allocations)
            # then runs ~1,300 times on W1, promoting into ~110 middle and 9
            # full ones: 0.59 s of the main thread's ~2 s. One per 50,000
            # allocations: 138, 12 and 1, 0.05 s. Records hold no reference
            # cycles; reference counting frees them whatever the thresholds.
            gc.set_threshold(*GC_THRESHOLDS)
        super().listen(file_input)

    @classmethod
    def invoke(cls, **options: Any) -> None:
        """The command line's run. Only it tunes the garbage collector: a target
        run inside another program (the tests) leaves that program's as it was."""
        thresholds = gc.get_threshold()
        cls.cli_run = True
        try:
            super().invoke(**options)
        finally:
            cls.cli_run = False
            gc.unfreeze()
            gc.set_threshold(*thresholds)

    def _handle_termination(self, signum: int, frame: Any) -> None:
        """SIGTERM/SIGINT: the input ends here, then the run ends as at end of input.

        The SDK drains inside the signal handler and exits 0: an error of the
        drain (or one a writer thread already had) was lost, and the drain
        could wait for a lock the interrupted main thread held (a STATE being
        printed, a queue being fed). Here the handler only ends the input
        (`FastSingerReader.stop`); the main thread then drains, prints the
        last safe STATE and exits non-zero if anything failed.
        """
        self.logger.info("Received termination signal %d: reading no more input, draining", signum)
        reader = self.message_reader
        if isinstance(reader, FastSingerReader):
            reader.stop(frame)  # raises out of a blocking read
        else:  # a reader class swapped in by a subclass: the SDK's way
            super()._handle_termination(signum, frame)

    def process_endofpipe(self) -> None:
        try:
            super().process_endofpipe()
            self.wait_durable()
        finally:
            self.pipeline.close()
            self.drainer_metrics.log_totals()
            if self._flusher is not None:
                if self._flusher.kafka is not None:
                    self._flusher.kafka.close()
                self._flusher.postgres.close()

    # -- the record hot path ----------------------------------------------------

    def _process_schema_message(self, message_dict: dict) -> None:
        self._direct_sinks.pop(str(message_dict.get("stream")), None)
        super()._process_schema_message(message_dict)

    def _direct_sink(self, stream: str) -> BatchedPostgresSink | None:
        """The stream's sink when a record needs none of the SDK's per-record steps.

        That is: no stream map or flattening (the map is the identity), no
        jsonschema validation and no SDK metadata columns. Then the SDK would
        only copy the record and parse its timestamps, which PostgreSQL does
        anyway as it casts them.
        """
        if stream in self._direct_sinks:
            return self._direct_sinks[stream]
        sink: BatchedPostgresSink | None = None
        maps = self.mapper.stream_maps.get(stream) or []
        if (
            len(maps) == 1
            and type(maps[0]) is SameRecordTransform
            and not maps[0].flattening_enabled
            and maps[0].stream_alias == stream
            and not self.validate_records
            and not self.config.get("add_record_metadata")
        ):
            found = self.get_sink(stream)
            sink = found if isinstance(found, BatchedPostgresSink) else None
        self._direct_sinks[stream] = sink
        return sink

    def _process_record_message(self, message_dict: dict) -> None:
        stream = message_dict.get("stream")
        record = message_dict.get("record")
        sink = self._direct_sink(stream) if isinstance(stream, str) else None
        if sink is None or not isinstance(record, dict):
            self._process_mapped_record(message_dict)
            return
        # The SDK's own steps for this case: no metadata columns, key check
        # (the SDK's, for its error, only when a key property is missing).
        sink._remove_sdc_metadata_from_record(record)
        for key in sink.key_properties:
            if key not in record:
                sink._singer_validate_message(record)
                break
        sink.tally_record_read()
        self.accept(sink.route, record)
        sink.record_counter_metric.increment()

    def _process_mapped_record(self, message_dict: dict) -> None:
        """The SDK's per-record steps, with the control properties kept out of them.

        Stream maps and flattening are for data columns: a whitelisting map
        would drop `_sdc_operation` (an update would become an insert), and
        flattening would turn `_sdc_where` and `_sdc_model` into JSON strings.
        They are taken out here and the sink's `preprocess_record` puts them
        back, as the tap sent them, into every record the maps make of this one
        (before the SDK's key check, which an update or delete skips).
        """
        record = message_dict.get("record")
        if isinstance(record, dict):
            self.held_controls = {
                name: record.pop(name) for name in control.CONTROL_PROPERTIES if name in record
            }
        try:
            super()._process_record_message(message_dict)
        finally:
            self.held_controls = None

    # -- routing ----------------------------------------------------------------

    def route_for(
        self, stream: str, schema: dict[str, Any], key_properties: list[str]
    ) -> TableRoute:
        """The stream's route, created on first SCHEMA and updated by later ones."""
        route = self.routes.get(stream)
        properties = dict(schema.get("properties") or {})
        if route is None:
            table = table_name_for_stream(stream)
            kafka_only = set(self._setting("kafka_only_tables") or [])
            db_only = set(self._setting("db_only_tables") or [])
            route = TableRoute(
                stream=stream,
                spec=TableSpec(table, properties, list(key_properties)),
                batcher=TableBatcher(table, self.batch_size),
                topic=topic_name(str(self._setting("kafka_topic_template")), table, stream),
                to_kafka=not ({table, stream} & db_only),
                to_postgres=not ({table, stream} & kafka_only),
            )
            self.routes[stream] = route
            self._routes_by_table.setdefault(table, []).append(route)
        else:
            route.spec.properties.update(properties)
            route.spec.key_properties = list(key_properties)
        return route

    def accept(self, route: TableRoute, record: dict[str, Any]) -> None:
        """Take one record: bucket it, or write it at once when forced or unbatched."""
        if self._strip_nul:
            record = strip_nul(record)
        operation = record.get(control.OPERATION) or "insert"
        seq = self._records_seen
        self._records_seen += 1
        if operation != "insert":
            if operation not in ("update", "delete"):
                raise FatalError(
                    f"stream {route.stream!r}, {describe_source(record)}: unknown "
                    f"{control.OPERATION}={operation!r}; refusing it rather than dropping it"
                )
            # Stream order per table: every earlier insert of the table first,
            # from whichever stream (the writer runs flushes in the order they
            # are submitted).
            self.flush_table(route)
            flusher, target = self.flusher, route.snapshot()
            publish_deletes = bool(self._setting("kafka_publish_deletes"))
            self.pipeline.submit(
                seq,
                lambda: flusher.change_messages(target, record, publish_deletes=publish_deletes),
                lambda: flusher.write_change(target, record),
            )
            self._after_flush()
            if time.monotonic() >= self._next_age_check:
                self.flush_aged()
            return
        key_order = tuple(record)
        columns = self._signatures.get(key_order)
        if columns is None:
            columns = data_columns(key_order)
            if len(self._signatures) >= MAX_CACHED_SIGNATURES:
                self._signatures.clear()
            self._signatures[key_order] = columns
        if record.get(control.FORCE_DRAIN) is True or not self.batched:
            forced = record.get(control.FORCE_DRAIN) is True
            self._submit_flush(route, columns, [record], seq, force_drain=forced)
            self._after_flush()
        else:
            batcher = route.batcher
            known = len(batcher.signatures_seen)
            full = batcher.add(seq, record, columns)
            if self._open_floor is None:
                self._open_floor = seq  # the oldest open record can only be this one
            if len(batcher.signatures_seen) > known:
                self._check_schema_variation(route)
            if full is not None:
                self._flush_bucket(route, full)
                self._after_flush()
        if time.monotonic() >= self._next_age_check:
            self.flush_aged()

    def _check_schema_variation(self, route: TableRoute) -> None:
        count = len(route.batcher.signatures_seen)
        threshold = int(self._setting("schema_variation_threshold"))
        if count > threshold:
            self.logger.warning(
                "Table %r has %d column signatures (threshold %d)",
                route.spec.name,
                count,
                threshold,
            )
            self.drainer_metrics.increment(DrainerMetric.SCHEMA_VARIATION_ALERT)
            self.drainer_metrics.log(
                DrainerMetric.SCHEMA_VARIATION_ALERT, count, table=route.spec.name
            )

    def _flush_bucket(self, route: TableRoute, bucket: Bucket) -> None:
        records = [pending.record for pending in bucket.records]
        self._submit_flush(route, bucket.signature.columns, records, bucket.oldest_seq)

    def _submit_flush(
        self,
        route: TableRoute,
        columns: tuple[str, ...],
        records: list[dict[str, Any]],
        oldest_seq: int,
        *,
        force_drain: bool = False,
    ) -> None:
        """Hand a flush to the writer threads (see pipeline.py)."""
        flusher, target = self.flusher, route.snapshot()
        mergeable = None
        encoded = None
        if not force_drain:
            if target.to_postgres:
                # Encoded here, so that the writer thread keeps PostgreSQL busy.
                encoded = flusher.postgres.encode_ahead(target.spec.name, columns, records)
            key = (target.stream, target.spec, target.to_postgres)
            mergeable = Mergeable(
                key,
                len(records),
                (columns, records, encoded),
                lambda parts: flusher.write_batches(
                    target, [(c, r) for c, r, _ in parts], encoded=[e for _, _, e in parts]
                ),
                lambda parts: flusher.send_batches(
                    target, [(c, r) for c, r, _ in parts], [e for _, _, e in parts]
                ),
                lane=target.spec.name,
            )
        self.pipeline.submit(
            oldest_seq,
            lambda: flusher.batch_messages(target, records),
            lambda: flusher.write_batch(
                target, columns, records, force_drain=force_drain, encoded=encoded
            ),
            mergeable,
        )

    def _publish(self, messages: list[Any]) -> None:
        """The Kafka thread's publish (the flusher is built on first use)."""
        self.flusher.publish(messages)

    def wait_durable(self) -> None:
        """Block until every submitted flush has finished; emit what is now safe."""
        self.pipeline.wait()
        self._after_flush()

    def flush_route(self, route: TableRoute) -> None:
        for bucket in route.batcher.take_all():
            self._flush_bucket(route, bucket)
        self._after_flush()

    def flush_table(self, route: TableRoute) -> None:
        """Flush every open bucket of the route's table, of any stream, oldest first."""
        routes = self._routes_by_table.get(route.spec.name) or [route]
        taken = [(r, bucket) for r in routes for bucket in r.batcher.take_all()]
        if len(routes) > 1:  # one stream's buckets keep take_all's order
            taken.sort(key=lambda pair: pair[1].oldest_seq)
        for owner, bucket in taken:
            self._flush_bucket(owner, bucket)
        self._after_flush()

    def flush_aged(self) -> None:
        """Flush the buckets older than max_batch_age_seconds; the next scan waits a while."""
        self._next_age_check = time.monotonic() + self._age_check_interval
        flushed = False
        for route in self.routes.values():
            for bucket in route.batcher.take_aged(self.max_batch_age_seconds):
                self._flush_bucket(route, bucket)
                flushed = True
        if flushed:
            self._after_flush()

    # -- checkpoints ------------------------------------------------------------

    def _after_flush(self) -> None:
        """Main thread: publish the oldest open record (buckets were taken), emit what is safe."""
        oldest = [r.batcher.oldest_open_seq() for r in self.routes.values()]
        self._open_floor = min((s for s in oldest if s is not None), default=None)
        self._emit_safe_state()

    def _emit_safe_state(self) -> None:
        """Either thread: emit the newest STATE whose every earlier record is durable.

        Waiting records are those in open buckets (at or after `_open_floor`,
        which only the main thread moves up, after taking buckets) and those in
        flushes not finished yet.
        """
        with self._state_lock:
            waiting = [self._open_floor, self.pipeline.oldest_waiting_seq()]
            oldest = min((s for s in waiting if s is not None), default=None)
            state = self.checkpoints.take_emittable(oldest)
            if state is not None:
                fault_point("before_state")
                self._print_state(copy.deepcopy(state))

    def _process_state_message(self, message_dict: dict) -> None:
        # A writer thread's error stops the run here too: an idle follow-mode
        # tap sends only STATEs (heartbeats), and no record would raise it.
        self.pipeline.raise_error()
        super()._process_state_message(message_dict)
        with self._state_lock:
            self.checkpoints.add(self._records_seen, message_dict["value"])
        if time.monotonic() >= self._next_age_check:
            self.flush_aged()
        self._after_flush()

    def _write_state_message(self, state: dict) -> None:
        # Called by drain_all once every sink is drained: all before it is durable.
        with self._state_lock:
            if self.checkpoints.mark_emitted(state):
                fault_point("before_state")
                self._print_state(state)

    def _print_state(self, state: dict) -> None:
        """The SDK's STATE line (`Target._write_state_message`), written to its last byte.

        The SDK writes through the text stdout, which drops what a short write
        leaves: a stop signal (Ctrl-Z, a debugger or py-spy attaching) cutting
        a write to a full pipe cut a STATE line longer than 8 KiB. The tap's
        `messages.write_all` is the same loop; the plugins share no module.

        The reader decodes numbers with a fraction as Decimal: they go out as
        the same JSON numbers, digit for digit (the standard library's
        `json.dumps` refuses a Decimal). A string holding a lone surrogate
        goes out as the JSON escape it came in as (see surrogates.py).
        """
        try:
            data = to_json_bytes(state) + b"\n"
        except UnicodeEncodeError:
            data = to_json_bytes_exact(state) + b"\n"
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("Emitting completed target state %s", data[:-1].decode())
        out = sys.stdout
        binary = getattr(out, "buffer", None)
        if binary is None:  # a text-only stdout (io.StringIO in test runners)
            out.write(data.decode())
            out.flush()
            return
        out.flush()
        view = memoryview(data)
        while view:  # a short write says how much it took: write the rest
            written = binary.write(view)
            if not written:
                raise OSError(f"stdout took no bytes of {len(view)} left to write")
            view = view[written:]
        binary.flush()
