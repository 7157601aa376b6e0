"""Reserved `_sdc_` record properties that carry pipeline control data.

They steer the target and are never table columns, so they are excluded from
a record's column signature. tap_redis_stream.control defines the same set; a
unit test keeps the two equal. The SDK's own metadata columns
(`_sdc_extracted_at`, `_sdc_batched_at`, ...) are *not* control properties:
when `add_record_metadata` is on they are ordinary columns.
"""

from __future__ import annotations

OPERATION = "_sdc_operation"
FORCE_DRAIN = "_sdc_force_drain"
SOURCE_STREAM = "_sdc_source_stream"
SOURCE_ENTRY_ID = "_sdc_source_entry_id"
WHERE = "_sdc_where"
MODEL = "_sdc_model"

CONTROL_PROPERTIES: frozenset[str] = frozenset(
    {OPERATION, FORCE_DRAIN, SOURCE_STREAM, SOURCE_ENTRY_ID, WHERE, MODEL}
)
