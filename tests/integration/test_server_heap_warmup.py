"""`server_heap_warmup_mib`: a batch statement's memory stays with the backend.

Counted on the real server: the minor page faults of the target's backend
process (from /proc, so the server must run on this machine, as the test
servers do) while it takes 9,000 rows in large insert statements, with the
setting's default and with 0.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from psycopg import sql

from tests.integration.target_helpers import (
    config,
    record_msg,
    rows,
    schema_msg,
    start_target,
)

PROPS = {
    "id": {"type": "integer"},
    "name": {"type": ["string", "null"]},
    "doc": {"type": "object"},
}
ROWS = 3000  # a feed's rows: about a megabyte of JSON


def lines(start: int, stop: int) -> list[str]:
    return [
        record_msg("wide", {"id": i, "name": "n" * 200 + str(i), "doc": {"k": i, "v": "x" * 20}})
        for i in range(start, stop)
    ]


def minor_faults(pid: int) -> int:
    path = Path(f"/proc/{pid}/stat")
    stat = path.read_text() if path.exists() else ""
    if "(postgres)" not in stat:
        pytest.skip("the PostgreSQL server does not run on this machine")
    return int(stat[stat.rindex(")") + 2 :].split()[7])  # minflt, field 10


def backend_faults(pg_url: str, schema: str, **settings: object) -> int:
    """The target backend's minor faults while it writes the 2nd to 4th feed."""
    # One statement of ROWS rows per feed, whatever the timing.
    run = start_target(
        config(pg_url, schema, insert_batch_size=ROWS, max_batches_per_statement=1, **settings)
    )
    try:
        run.feed([schema_msg("wide", PROPS, ["id"]), *lines(0, ROWS)])
        connection = run.target.flusher.postgres._conn  # the test looks inside: whose faults
        assert connection is not None
        pid = connection.info.backend_pid
        before = minor_faults(pid)
        for k in range(1, 4):
            run.feed(lines(k * ROWS, (k + 1) * ROWS))
        return minor_faults(pid) - before
    finally:
        run.finish()


def test_a_warmed_backend_keeps_a_statements_memory_instead_of_faulting_it_in_again(
    pg_url, pg_conn, unique
):
    faults = {}
    for label, settings in (("off", {"server_heap_warmup_mib": 0}), ("default", {})):
        name = f"heap_{label}_{unique}"
        schema = sql.Identifier(name)
        pg_conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
        try:
            faults[label] = backend_faults(pg_url, name, **settings)
            assert len(rows(pg_conn, name, "wide")) == 4 * ROWS
        finally:
            pg_conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(schema))
    cold, warm = faults["off"], faults["default"]
    # Without the warm-up glibc hands each statement's heap back to the kernel
    # and the next one faults it in again: about 1.2 faults a row here.
    assert cold > 2 * ROWS, f"the control measured too few faults to compare: {cold}"
    assert warm * 4 < cold, f"warmed backend: {warm} faults, cold one: {cold}"
