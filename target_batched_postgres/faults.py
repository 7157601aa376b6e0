"""Named crash points for fault-injection tests: SIGKILL this process at a chosen one.

`DRAINER_FAULT_POINT=<name>` (and `DRAINER_FAULT_AFTER=<n>`, default 1) make
the process kill itself with SIGKILL the n-th time it passes that point: no
cleanup, no flush, no final STATE, as an OOM kill or a lost machine would. The
environment is read once, at import; when the variable is unset, `fault_point`
is a function that returns at once.

The target's points, in the order a flush passes them:

- `before_kafka`: a batch (or an update) is about to be produced to Kafka;
- `after_kafka_ack`: Kafka acknowledged it, PostgreSQL has not seen it;
- `after_pg_send`: a batch's insert was sent in pipeline mode, its result not
  read (the statement sent before it may still be in flight too);
- `during_fallback`: after each record of the per-record fallback, its
  transaction open;
- `before_pg_commit`: dead letters written, their transaction (and the
  fallback's good rows) not committed;
- `before_state`: everything before a STATE is durable, the STATE is not written.

A batch's own INSERT is one statement in autocommit: it has no moment
between its write and its commit to stop at.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

ENV_POINT = "DRAINER_FAULT_POINT"
ENV_AFTER = "DRAINER_FAULT_AFTER"
POINTS = frozenset(
    {
        "before_kafka",
        "after_kafka_ack",
        "after_pg_send",
        "before_pg_commit",
        "during_fallback",
        "before_state",
    }
)


def _disarmed(name: str) -> None:
    """No fault configured: nothing to do."""


class _Armed:
    """Counts passes of one point and kills the process at the chosen one."""

    def __init__(self, point: str, after: int) -> None:
        self.point = point
        self.after = after
        self.hits = 0

    def __call__(self, name: str) -> None:
        if name != self.point:
            return
        self.hits += 1
        if self.hits >= self.after:
            os.write(2, f"fault point {name!r} reached ({self.hits}): SIGKILL\n".encode())
            os.kill(os.getpid(), signal.SIGKILL)


def _from_env() -> _Armed | None:
    point = os.environ.get(ENV_POINT, "").strip()
    if not point:
        return None
    return _Armed(point, max(int(os.environ.get(ENV_AFTER, "1") or 1), 1))


_ARMED = _from_env()
fault_point: Callable[[str], None] = _ARMED if _ARMED is not None else _disarmed
