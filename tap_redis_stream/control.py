"""Reserved record properties that carry pipeline control data, never table columns.

The target (target_batched_postgres.control) excludes exactly this set from a
record's column signature; a unit test keeps the two lists equal.
"""

from __future__ import annotations

OPERATION = "_sdc_operation"  # "insert" | "update" | "delete"
FORCE_DRAIN = "_sdc_force_drain"  # bool: write at once, alone
SOURCE_STREAM = "_sdc_source_stream"  # Redis stream key the entry came from
SOURCE_ENTRY_ID = "_sdc_source_entry_id"  # Redis entry ID, "<ms>-<seq>"
WHERE = "_sdc_where"  # structured where clause of an update/delete
MODEL = "_sdc_model"  # an update's full updated row, published to Kafka

CONTROL_PROPERTIES: frozenset[str] = frozenset(
    {OPERATION, FORCE_DRAIN, SOURCE_STREAM, SOURCE_ENTRY_ID, WHERE, MODEL}
)
