"""Riding out a Redis restart: bounded exponential backoff around the reader's Redis calls."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from tap_redis_stream.client import RedisUnavailable

logger = logging.getLogger(__name__)
T = TypeVar("T")

FIRST_WAIT_SECONDS = 0.1
MAX_WAIT_SECONDS = 5.0
STOP_POLL_SECONDS = 0.1


class RedisGaveUp(SystemExit):
    """Redis stayed unreachable for longer than `redis_reconnect_timeout_seconds`."""


class StopWhileUnavailable(Exception):
    """SIGTERM arrived while waiting for Redis: end the run with the state so far."""


class Reconnect:
    """Runs a Redis call; while Redis is unavailable, retries with a doubling wait
    (0.1 s up to 5 s) and gives up after `timeout_seconds` of failure.

    Each failed attempt is logged with the URL (never its password) and calls
    `on_wait`, which lets the reader heartbeat its STATE and report health.
    """

    def __init__(
        self,
        display_url: str,
        timeout_seconds: float,
        *,
        on_wait: Callable[[int], None] = lambda attempt: None,
        on_recovered: Callable[[], None] = lambda: None,
        stop_requested: Callable[[], bool] = lambda: False,
    ) -> None:
        self.display_url = display_url
        self.timeout_seconds = timeout_seconds
        self.on_wait = on_wait
        self.on_recovered = on_recovered
        self.stop_requested = stop_requested
        self.outages = 0

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """`fn()`, retried while it raises RedisUnavailable. `what` names it in logs."""
        failing_since: float | None = None
        attempt = 0
        wait = FIRST_WAIT_SECONDS
        while True:
            try:
                result = fn()
            except RedisUnavailable as exc:
                now = time.monotonic()
                if failing_since is None:
                    failing_since = now
                    self.outages += 1
                attempt += 1
                down_for = now - failing_since
                if down_for >= self.timeout_seconds:
                    raise RedisGaveUp(
                        f"tap-redis-stream: Redis at {self.display_url} unreachable for "
                        f"{down_for:.0f} s ({attempt} attempts, redis_reconnect_timeout_seconds="
                        f"{self.timeout_seconds:g}) while trying to {what}: {exc}"
                    ) from exc
                pause = min(wait, MAX_WAIT_SECONDS, self.timeout_seconds - down_for)
                logger.warning(
                    "Redis at %s unavailable (%s): attempt %d to %s failed, retrying in %.1f s "
                    "(giving up after %g s)",
                    self.display_url,
                    exc.__cause__ or exc,
                    attempt,
                    what,
                    pause,
                    self.timeout_seconds,
                )
                self.on_wait(attempt)
                self._sleep(pause)
                wait *= 2
                continue
            if attempt:
                logger.warning(
                    "Redis at %s is back: %s succeeded after %d failed attempt(s), %.1f s",
                    self.display_url,
                    what,
                    attempt,
                    time.monotonic() - (failing_since or 0.0),
                )
                self.on_recovered()
            return result

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.stop_requested():
                raise StopWhileUnavailable
            time.sleep(min(left, STOP_POLL_SECONDS))
