"""Exponential backoff for transient failures, then a clear fatal error."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from target_batched_postgres.errors import FatalError, TransientError

T = TypeVar("T")
logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`max_attempts` tries, sleeping base, 2*base, 4*base ... capped at `max_backoff_seconds`.

    The defaults follow the old drainer: 1 s, 2 s, 4 s ... capped at 10 s.
    """

    max_attempts: int = 5
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 10.0
    sleep: Callable[[float], None] = time.sleep

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        return min(self.backoff_seconds * 2 ** (attempt - 1), self.max_backoff_seconds)

    def run(self, action: Callable[[], T], *, what: str, attempts: int | None = None) -> T:
        limit = attempts or self.max_attempts
        for attempt in range(1, limit + 1):
            try:
                return action()
            except TransientError as exc:
                if attempt == limit:
                    raise FatalError(f"{what} failed after {limit} attempt(s): {exc}") from exc
                wait = self.delay(attempt)
                logger.warning(
                    "%s failed (attempt %d of %d): %s; retrying in %.1f s",
                    what,
                    attempt,
                    limit,
                    exc,
                    wait,
                )
                self.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover
