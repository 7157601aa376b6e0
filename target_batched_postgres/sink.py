"""The Sink the SDK sees: a thin router into the target's per-table buckets.

One Sink per stream, as the SDK wants; the buckets live in the target's
`TableRoute`, so a Sink retired by a new SCHEMA takes no open batch with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from singer_sdk.sinks import Sink

from target_batched_postgres import control

if TYPE_CHECKING:
    from target_batched_postgres.target import TargetBatchedPostgres


class BatchedPostgresSink(Sink):
    """Routes records into column-signature buckets; draining flushes them all."""

    # A record that does not match its SCHEMA is logged, not fatal: PostgreSQL
    # casts what it can (as it did the drainer's literals) and a value it
    # rejects sends the record to the dead-letter table, so nothing is lost.
    fail_on_record_validation_exception = False

    def __init__(
        self,
        target: TargetBatchedPostgres,
        stream_name: str,
        schema: dict,
        key_properties: Sequence[str] | None,
    ) -> None:
        self._drainer = target  # before the SDK's __init__, which asks validate_schema
        super().__init__(target, stream_name, schema, key_properties)
        self.route = target.route_for(stream_name, self.schema, list(key_properties or []))

    @property
    def validate_schema(self) -> bool:
        # Off unless asked for: see the `validate_records` setting.
        return self._drainer.validate_records

    @property
    def is_full(self) -> bool:
        # Buckets flush themselves at insert_batch_size; the SDK's size check
        # (one per sink, not per signature) would flush half-empty buckets.
        return False

    def _singer_validate_message(self, record: dict) -> None:
        # An update or delete names its rows by `_sdc_where`, not by key values
        # (and an unknown operation is refused by the target with its own error).
        if record.get(control.OPERATION) not in (None, "insert"):
            return
        super()._singer_validate_message(record)

    def _parse_timestamps_in_record(self, record: dict, schema: dict, treatment: Any) -> None:
        # Date-times stay the text the tap sent, as on the direct path:
        # PostgreSQL casts them into their columns and a value it rejects
        # dead-letters its record (the SDK's parser would stop the run), and
        # Kafka carries them as sent.
        return

    def preprocess_record(self, record: dict, context: dict) -> dict:
        # Back in: the control properties the target kept away from stream
        # maps and flattening (TargetBatchedPostgres._process_mapped_record).
        held = self._drainer.held_controls
        if held:
            record.update(held)
        return record

    def process_record(self, record: dict, context: dict) -> None:
        self._drainer.accept(self.route, record)

    def process_batch(self, context: dict) -> None:
        """Flush every open bucket of the table, or take records of a BATCH message."""
        records: list[dict[str, Any]] | None = context.get("records")
        if records is None:
            # The SDK drains (and then writes its latest STATE) expecting all
            # of the sink's records durable when this returns.
            self._drainer.flush_route(self.route)
            self._drainer.wait_durable()
            return
        # Counted like RECORD messages, so the SDK's next drain flushes them.
        self.tally_record_read(len(records))
        # As for a RECORD: the SDK's metadata keys are columns only with
        # add_record_metadata (the control properties are not among them).
        strip_metadata = not self.include_sdc_metadata_properties
        for record in records:
            if strip_metadata:
                self._remove_sdc_metadata_from_record(record)
            self._drainer.accept(self.route, record)
