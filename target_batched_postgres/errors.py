"""The target's error hierarchy, named for what the caller should do.

Driver exceptions (psycopg, confluent-kafka) are translated into these only
inside the writer that called the driver.
"""

from __future__ import annotations


class TargetError(Exception):
    """Base class of the target's own errors."""


class TransientError(TargetError):
    """The operation may succeed if retried (connection lost, deadlock, broker down)."""


class RecordRejected(TargetError):
    """This record's data is bad for PostgreSQL: fall back, then dead-letter it."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class FatalError(TargetError):
    """Stop the run: retries are exhausted or the input cannot be processed."""


class ConfigError(FatalError):
    """Bad configuration, detected before any input is read."""
