"""Named crash points for fault-injection tests: SIGKILL this process at a chosen one.

`DRAINER_FAULT_POINT=<name>` (and `DRAINER_FAULT_AFTER=<n>`, default 1) make
the process kill itself with SIGKILL the n-th time it passes that point, as an
OOM kill or a lost machine would. The environment is read once, at import;
when the variable is unset, `fault_point` is a function that returns at once.
The same variables drive target_batched_postgres.faults; the point names differ.

The tap's points:

- `between_reads`: a read batch's records and its STATE are written, the next
  XREAD has not run. With `decode_workers`, the batch was sent to a worker:
  the records and STATE written are those of the batches already decoded.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

ENV_POINT = "DRAINER_FAULT_POINT"
ENV_AFTER = "DRAINER_FAULT_AFTER"
POINTS = frozenset({"between_reads"})


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
