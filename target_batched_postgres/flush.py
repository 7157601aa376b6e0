"""A flush, in named steps: publish to Kafka -> write the batch -> fallback -> dead-letter."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from target_batched_postgres import control
from target_batched_postgres.batcher import TableBatcher
from target_batched_postgres.dead_letter import describe_source
from target_batched_postgres.faults import fault_point
from target_batched_postgres.kafka_writer import KafkaMessage, KafkaPublisher
from target_batched_postgres.metrics import DrainerMetric, Metrics
from target_batched_postgres.postgres_writer import (
    Encoded,
    InFlight,
    PostgresWriter,
    TableSpec,
    WriteResult,
)
from target_batched_postgres.surrogates import to_json_bytes_exact
from target_batched_postgres.values import to_json_bytes

logger = logging.getLogger(__name__)


@dataclass
class TableRoute:
    """Where one Singer stream's records go, and its open buckets."""

    stream: str
    spec: TableSpec
    batcher: TableBatcher
    topic: str
    to_kafka: bool
    to_postgres: bool  # False for Kafka-only tables: only force-drained records go

    def snapshot(self) -> TableRoute:
        """A copy for a flush on the writer thread: later SCHEMAs do not change it."""
        spec = TableSpec(self.spec.name, dict(self.spec.properties), list(self.spec.key_properties))
        return replace(self, spec=spec)


def build_kafka_message(route: TableRoute, record: Mapping[str, Any]) -> KafkaMessage:
    """The row as JSON; key = source stream (keeps a shard's order) else the primary key.

    Inserts publish the record's columns; an update publishes the full updated
    row (`_sdc_model`) when the source sent one, else the columns it sets; a
    delete event publishes `{"where": <clause>}`. The `operation` header says
    which. A record holding a lone surrogate (see surrogates.py) is published
    as the tap sent it: the value's JSON spells it `\\ud800`, a key or header
    as that visible text.
    """
    try:
        return _build_kafka_message(route, record, to_json_bytes, str.encode)
    except UnicodeEncodeError:
        return _build_kafka_message(route, record, to_json_bytes_exact, _visible_bytes)


def _visible_bytes(text: str) -> bytes:
    return text.encode("utf-8", "backslashreplace")


def _build_kafka_message(
    route: TableRoute,
    record: Mapping[str, Any],
    to_json: Callable[[Any], bytes],
    to_bytes: Callable[[str], bytes],
) -> KafkaMessage:
    operation = str(record.get(control.OPERATION) or "insert")
    model = record.get(control.MODEL)
    if operation == "delete":
        row: dict[str, Any] = {"where": record.get(control.WHERE)}
    elif operation == "update" and isinstance(model, dict):
        row = model  # the full updated row, as the old drainer published it
    else:
        row = {k: v for k, v in record.items() if k not in control.CONTROL_PROPERTIES}
    source = record.get(control.SOURCE_STREAM)
    entry = record.get(control.SOURCE_ENTRY_ID)
    key: bytes | None
    if source is not None:
        key = to_bytes(str(source))
    elif route.spec.key_properties:
        values = [record.get(k) for k in route.spec.key_properties]
        key = to_bytes(str(values[0])) if len(values) == 1 else to_json(values)
    else:
        key = None
    headers: list[tuple[str, str | bytes | None]] = [
        ("table", route.spec.name.encode()),
        ("operation", to_bytes(operation)),
    ]
    if source is not None:
        headers.append(("source_stream", to_bytes(str(source))))
    if entry is not None:
        headers.append(("source_entry_id", to_bytes(str(entry))))
    return KafkaMessage(route.topic, key, to_json(row), headers)


def build_kafka_messages(
    route: TableRoute, records: Sequence[Mapping[str, Any]]
) -> list[KafkaMessage]:
    """`build_kafka_message` of each record, with what the records share worked out once.

    Inserts, the common case, take the loop below; any other record is built
    by `build_kafka_message` itself. The messages are the same either way
    (tested side by side); so are the messages of a batch holding a lone
    surrogate, which `build_kafka_message` builds one by one.
    """
    try:
        return _build_insert_messages(route, records)
    except UnicodeEncodeError:
        return [build_kafka_message(route, record) for record in records]


def _build_insert_messages(
    route: TableRoute, records: Sequence[Mapping[str, Any]]
) -> list[KafkaMessage]:
    topic = route.topic
    table = route.spec.name.encode()
    pk = route.spec.key_properties
    single = pk[0] if len(pk) == 1 else None
    skip = control.CONTROL_PROPERTIES
    messages: list[KafkaMessage] = []
    append = messages.append
    for record in records:
        operation = record.get(control.OPERATION)
        if operation is not None and operation != "insert":
            append(build_kafka_message(route, record))
            continue
        # A record without control properties (another tap's) is its own row.
        row = (
            record
            if skip.isdisjoint(record)
            else {k: v for k, v in record.items() if k not in skip}
        )
        source = record.get(control.SOURCE_STREAM)
        entry = record.get(control.SOURCE_ENTRY_ID)
        headers: list[tuple[str, str | bytes | None]]
        if source is not None:
            key: bytes | None = str(source).encode()
            headers = [("table", table), ("operation", b"insert"), ("source_stream", key)]
        else:
            if single is not None:
                key = str(record.get(single)).encode()
            elif pk:
                key = to_json_bytes([record.get(k) for k in pk])
            else:
                key = None
            headers = [("table", table), ("operation", b"insert")]
        if entry is not None:
            headers.append(("source_entry_id", str(entry).encode()))
        append(KafkaMessage(topic, key, to_json_bytes(row), headers))
    return messages


class Flusher:
    """Makes a batch durable: acknowledged by Kafka, then committed in PostgreSQL.

    Each flush is two steps, its Kafka messages (`*_messages`, sent by
    `publish`) then `write_*`, which the target's writer pipeline runs on two
    threads, the second only after the first succeeded (see pipeline.py).
    """

    def __init__(
        self, kafka: KafkaPublisher | None, postgres: PostgresWriter, metrics: Metrics
    ) -> None:
        self.kafka = kafka
        self.postgres = postgres
        self.metrics = metrics

    def batch_messages(
        self, route: TableRoute, records: Sequence[dict[str, Any]]
    ) -> list[KafkaMessage]:
        """Step 1's messages: the batch's records (if the route goes to Kafka)."""
        if route.to_kafka and self.kafka is not None:
            return build_kafka_messages(route, records)
        return []

    def write_batch(
        self,
        route: TableRoute,
        keys: Sequence[str],
        records: Sequence[dict[str, Any]],
        *,
        force_drain: bool = False,
        encoded: Encoded | None = None,
    ) -> None:
        """Step 2, after step 1 succeeded: write PostgreSQL (Kafka-only tables: forced only)."""
        self.write_batches(route, [(keys, records)], force_drain=force_drain, encoded=[encoded])

    def change_messages(
        self, route: TableRoute, record: dict[str, Any], *, publish_deletes: bool
    ) -> list[KafkaMessage]:
        """Step 1 of a change: updates go to Kafka; deletes only with `kafka_publish_deletes`."""
        operation = record.get(control.OPERATION)
        if route.to_kafka and self.kafka is not None and (operation == "update" or publish_deletes):
            return [build_kafka_message(route, record)]
        return []

    def write_change(self, route: TableRoute, record: dict[str, Any]) -> None:
        """Step 2 of a change: PostgreSQL.

        Kafka-only tables skip PostgreSQL for updates unless force-drained;
        deletes always reach PostgreSQL.
        """
        started = time.perf_counter()
        operation = record.get(control.OPERATION)
        forced = record.get(control.FORCE_DRAIN) is True
        if operation == "delete" or route.to_postgres or forced:
            result = self.postgres.apply_change(route.spec, record)
            if result.dead_lettered:
                self.metrics.increment(DrainerMetric.RECORDS_DEAD_LETTERED)
            else:
                metric = (
                    DrainerMetric.UPDATES_APPLIED
                    if operation == "update"
                    else DrainerMetric.DELETES_APPLIED
                )
                self.metrics.increment(metric)
                if result.rows == 0:
                    self.metrics.increment(DrainerMetric.CHANGES_MATCHED_NO_ROW)
                    logger.info(
                        "%s on %r matched no row (%s)",
                        operation,
                        route.spec.name,
                        describe_source(record),
                    )
        self.metrics.log_batch_time(route.spec.name, 1, time.perf_counter() - started)

    def publish(self, messages: list[KafkaMessage]) -> None:
        """Step 1: publish the messages of one or more flushes, wait for every acknowledgement."""
        if self.kafka is None:
            raise RuntimeError("Kafka is switched off")
        fault_point("before_kafka")
        self.kafka.publish(messages)
        fault_point("after_kafka_ack")

    def write_batches(
        self,
        route: TableRoute,
        parts: Sequence[tuple[Sequence[str], Sequence[dict[str, Any]]]],
        *,
        force_drain: bool = False,
        encoded: Sequence[Encoded | None] | None = None,
    ) -> None:
        """Step 2 for one batch, or batches of one table that waited together
        (see PostgresWriter.write_parts; `encoded`: their `encode_ahead`)."""
        started = time.perf_counter()
        result = None
        if route.to_postgres or force_drain:
            result = self.postgres.write_parts(route.spec, parts, encoded)
        self._written(route, parts, result, started)

    def send_batches(
        self,
        route: TableRoute,
        parts: Sequence[tuple[Sequence[str], Sequence[dict[str, Any]]]],
        encoded: Sequence[Encoded | None],
    ) -> SentBatches | None:
        """Step 2 of `write_batches` begun: the insert sent, its result taken by `finish`.

        None when the batches must be written by `write_batches` (see
        PostgresWriter.send for when).
        """
        if not route.to_postgres:
            return None
        started = time.perf_counter()
        sent = self.postgres.send(route.spec, parts, encoded)
        return None if sent is None else SentBatches(self, route, parts, sent, started)

    def _written(
        self,
        route: TableRoute,
        parts: Sequence[tuple[Sequence[str], Sequence[dict[str, Any]]]],
        result: WriteResult | None,
        started: float,
    ) -> None:
        if result is not None:
            self.metrics.increment(DrainerMetric.RECORDS_WRITTEN, result.written)
            self.metrics.increment(DrainerMetric.RECORDS_DEAD_LETTERED, result.dead_lettered)
            if result.fallback_used:
                self.metrics.increment(DrainerMetric.BATCH_FALLBACK_USED)
                self.metrics.log(DrainerMetric.BATCH_FALLBACK_USED, 1, table=route.spec.name)
        rows = sum(len(records) for _, records in parts)
        self.metrics.log_batch_time(route.spec.name, rows, time.perf_counter() - started)
        self.metrics.log_totals_if_due()


class SentBatches:
    """Batches whose insert is in flight (`Flusher.send_batches`): see pipeline.Sent."""

    def __init__(
        self,
        flusher: Flusher,
        route: TableRoute,
        parts: Sequence[tuple[Sequence[str], Sequence[dict[str, Any]]]],
        sent: InFlight,
        started: float,
    ) -> None:
        self._flusher = flusher
        self._route = route
        self._parts = parts
        self._sent = sent
        self._started = started

    def ready(self, timeout: float) -> bool:
        return self._flusher.postgres.ready(self._sent, timeout)

    def finish(self) -> None:
        result = self._flusher.postgres.finish(self._sent)
        self._flusher._written(self._route, self._parts, result, self._started)

    def abandon(self) -> None:
        self._flusher.postgres.abandon(self._sent)
