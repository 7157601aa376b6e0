"""Counters a test can read, logged as SDK-style `METRIC:` lines."""

from __future__ import annotations

import logging
import time
from collections import Counter
from enum import StrEnum
from typing import Any

from singer_sdk import metrics as sdk_metrics


class DrainerMetric(StrEnum):
    """Metric names of this target (the SDK accepts a custom str Enum)."""

    BATCH_FALLBACK_USED = "batch_fallback_used"
    BATCH_EXECUTION_TIME = "batch_execution_time"
    SCHEMA_VARIATION_ALERT = "schema_variation_alert"
    RECORDS_WRITTEN = "records_written"
    RECORDS_DEAD_LETTERED = "records_dead_lettered"
    KAFKA_MESSAGES_PUBLISHED = "kafka_messages_published"
    KAFKA_DELIVERY_FAILURES = "kafka_delivery_failures"
    SQL_STATEMENTS = "sql_statements"
    INSERT_STATEMENTS = "insert_statements"
    UPDATES_APPLIED = "updates_applied"
    DELETES_APPLIED = "deletes_applied"
    CHANGES_MATCHED_NO_ROW = "changes_matched_no_row"


COUNTERS = [m for m in DrainerMetric if m is not DrainerMetric.BATCH_EXECUTION_TIME]
LOG_INTERVAL_SECONDS = 60.0


class Metrics:
    """Run-wide counters; totals are logged every minute and at the end of the run."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.counts: Counter[DrainerMetric] = Counter()
        self._logger = logger or sdk_metrics.get_metrics_logger()
        self._last_logged = time.monotonic()

    def increment(self, metric: DrainerMetric, value: int = 1) -> None:
        self.counts[metric] += value

    def __getitem__(self, metric: DrainerMetric) -> int:
        return self.counts[metric]

    def log(self, metric: DrainerMetric, value: Any, kind: str = "counter", **tags: Any) -> None:
        point: sdk_metrics.Point[Any] = sdk_metrics.Point(kind, metric, value, tags)  # type: ignore[arg-type]
        sdk_metrics.log(self._logger, point)

    def log_batch_time(self, table: str, rows: int, seconds: float) -> None:
        self.log(
            DrainerMetric.BATCH_EXECUTION_TIME, round(seconds, 6), "timer", table=table, rows=rows
        )

    def log_totals_if_due(self) -> None:
        if time.monotonic() - self._last_logged >= LOG_INTERVAL_SECONDS:
            self.log_totals()

    def log_totals(self) -> None:
        self._last_logged = time.monotonic()
        for metric in COUNTERS:
            self.log(metric, self.counts[metric])
