"""Driver errors become what the caller should do: retry, dead-letter, or stop."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from target_batched_postgres.errors import FatalError, RecordRejected, TransientError
from target_batched_postgres.postgres_writer import translate


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (errors.SerializationFailure("x"), TransientError),
        (errors.DeadlockDetected("x"), TransientError),
        (errors.AdminShutdown("x"), TransientError),
        (psycopg.OperationalError("connection lost"), TransientError),
        (errors.QueryCanceled("statement timeout"), TransientError),
        (errors.LockNotAvailable("lock timeout"), TransientError),
        (errors.UniqueViolation("x"), RecordRejected),
        (errors.InvalidTextRepresentation("x"), RecordRejected),
        (errors.NotNullViolation("x"), RecordRejected),
        (
            psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"),
            RecordRejected,
        ),
        (errors.InsufficientPrivilege("x"), FatalError),
        (errors.SyntaxError("x"), FatalError),
    ],
)
def test_translate(exc: psycopg.Error, kind: type) -> None:
    translated = translate(exc)
    assert type(translated) is kind
    if isinstance(translated, RecordRejected):
        assert translated.sqlstate == exc.sqlstate
