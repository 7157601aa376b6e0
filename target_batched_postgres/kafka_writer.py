"""Kafka I/O: publish a batch and wait for every acknowledgement, or fail.

Only this module talks to confluent-kafka. The producer is idempotent with
acks=all; a batch counts as published only when the broker acknowledged every
message of it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from target_batched_postgres.errors import ConfigError, FatalError
from target_batched_postgres.metrics import DrainerMetric, Metrics
from target_batched_postgres.retry import RetryPolicy

logger = logging.getLogger(__name__)

# Settings we own; a user's pass-through config may not weaken them.
# Delivery reports only for failures: a message flush() saw through without an
# error report was acknowledged (a Python callback per message cost ~2 µs).
_ENFORCED = {"enable.idempotence": True, "acks": "all", "delivery.report.only.error": True}
_DEFAULTS = {"linger.ms": 5, "compression.type": "lz4", "queue.buffering.max.messages": 200000}
PREFLIGHT_TIMEOUT_SECONDS = 10.0


# librdkafka's producer-only properties (scope "P" in its CONFIGURATION.md,
# global and topic). The rest of the producer's settings are the connection's
# (TLS, SASL, `broker.address.family`, `api.version.request`, timeouts ...),
# and the preflight's AdminClient must connect as the producer will.
PRODUCER_ONLY = frozenset(
    {
        "transactional.id", "transaction.timeout.ms", "enable.idempotence",
        "enable.gapless.guarantee", "queue.buffering.max.messages",
        "queue.buffering.max.kbytes", "queue.buffering.max.ms", "linger.ms",
        "message.send.max.retries", "retries", "queue.buffering.backpressure.threshold",
        "compression.codec", "compression.type", "compression.level", "batch.num.messages",
        "batch.size", "delivery.report.only.error", "dr_cb", "dr_msg_cb",
        "sticky.partitioning.linger.ms", "request.required.acks", "acks",
        "request.timeout.ms", "message.timeout.ms", "delivery.timeout.ms",
        "queuing.strategy", "produce.offset.report", "partitioner", "partitioner_cb",
        "msg_order_cmp", "on_delivery",
    }
)  # fmt: skip


def build_admin_config(producer_config: Mapping[str, Any]) -> dict[str, Any]:
    """The producer's settings without its producer-only ones: the AdminClient's.

    The Python AdminClient is a librdkafka producer handle, so it would take
    these too, but an idempotent or transactional one would also ask the
    brokers for a producer ID just to list topics.
    """
    return {k: v for k, v in producer_config.items() if k not in PRODUCER_ONLY}


class KafkaMessage(NamedTuple):
    """One message to produce. A named tuple: one is built per record (a frozen
    dataclass took twice as long to build)."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, str | bytes | None]]

    def describe(self) -> str:
        """Topic, source stream and entry (from the headers) and size, for error messages."""
        found = {name: value for name, value in self.headers if isinstance(value, bytes)}
        source = ", ".join(
            f"{name} {found[name].decode(errors='replace')!r}"
            for name in ("source_stream", "source_entry_id")
            if name in found
        )
        return f"topic {self.topic!r}, {source or 'no source entry'}, {len(self.value)} bytes"


class KafkaPublisher:
    """Publishes batches synchronously: returns only when all are acknowledged."""

    def __init__(
        self,
        bootstrap_servers: str,
        producer_config: Mapping[str, Any],
        *,
        delivery_timeout_seconds: float,
        retry: RetryPolicy,
        metrics: Metrics,
    ) -> None:
        self._config: dict[str, Any] = {
            **_DEFAULTS,
            **producer_config,
            **_ENFORCED,
            "bootstrap.servers": bootstrap_servers,
            "message.timeout.ms": int(delivery_timeout_seconds * 1000),
        }
        self._delivery_timeout = delivery_timeout_seconds
        self._retry = retry
        self._metrics = metrics
        self._producer: Producer | None = None

    def _get_producer(self) -> Producer:
        if self._producer is None:
            try:
                self._producer = Producer(self._config)
            except KafkaException as exc:
                raise ConfigError(f"kafka_producer_config: {exc}") from exc
        return self._producer

    def preflight(self) -> None:
        """Reach the brokers before any input is read."""
        self._get_producer()  # a bad setting is named as kafka_producer_config's
        try:
            admin = AdminClient(build_admin_config(self._config))
        except KafkaException as exc:
            raise ConfigError(f"kafka_producer_config: {exc}") from exc
        try:
            admin.list_topics(timeout=PREFLIGHT_TIMEOUT_SECONDS)
        except KafkaException as exc:
            servers = self._config["bootstrap.servers"]
            raise ConfigError(f"kafka_bootstrap_servers: cannot reach {servers!r}: {exc}") from exc

    def publish(self, messages: Sequence[KafkaMessage]) -> None:
        """Produce all messages and wait for their acknowledgements.

        Undelivered messages are produced again after a backoff; when attempts
        run out a FatalError stops the run, so no later write and no STATE
        passes them.
        """
        pending = list(range(len(messages)))
        limit = self._retry.max_attempts
        for attempt in range(1, limit + 1):
            errors = self._produce_and_wait([messages[i] for i in pending])
            failed = [pending[i] for i, err in enumerate(errors) if err is not None]
            delivered = len(pending) - len(failed)
            self._metrics.increment(DrainerMetric.KAFKA_MESSAGES_PUBLISHED, delivered)
            if not failed:
                return
            self._metrics.increment(DrainerMetric.KAFKA_DELIVERY_FAILURES, len(failed))
            reason = next(err for err in errors if err is not None)
            if attempt == limit:
                raise FatalError(
                    f"Kafka delivery failed for {len(failed)} message(s) (first: "
                    f"{messages[failed[0]].describe()}) after {limit} attempt(s): {reason}"
                )
            wait = self._retry.delay(attempt)
            logger.warning(
                "Kafka delivery failed for %d of %d message(s) (attempt %d of %d): %s; "
                "retrying in %.1f s",
                len(failed),
                len(pending),
                attempt,
                limit,
                reason,
                wait,
            )
            self._retry.sleep(wait)
            pending = failed

    def _produce_and_wait(self, messages: Sequence[KafkaMessage]) -> list[str | None]:
        """One produce pass; returns an error text (or None) per message."""
        producer = self._get_producer()
        results: list[str | None] = [None] * len(messages)

        def on_delivery(index: int) -> Any:
            # Called only for a failed delivery (delivery.report.only.error).
            def callback(err: KafkaError | None, _msg: Any) -> None:
                results[index] = "not acknowledged" if err is None else err.str()

            return callback

        for index, message in enumerate(messages):
            self._produce(producer, message, on_delivery(index))
        deadline = time.monotonic() + self._delivery_timeout + 5
        remaining = producer.flush(max(deadline - time.monotonic(), 0))
        if remaining:
            logger.warning(
                "%d Kafka message(s) still in flight after the delivery timeout", remaining
            )
            # Which of them is not known: none counts as acknowledged.
            results = [err or "not acknowledged within the delivery timeout" for err in results]
        if remaining or any(err is not None for err in results):
            # After a failed delivery the idempotent producer may hold stale
            # sequence state (or be fenced): the retry starts with a new one.
            self._reset_producer()
        return results

    def _produce(self, producer: Producer, message: KafkaMessage, callback: Any) -> None:
        while True:
            try:
                producer.produce(
                    message.topic,
                    value=message.value,
                    key=message.key,
                    headers=message.headers,
                    on_delivery=callback,
                )
            except BufferError:
                producer.poll(0.05)  # local queue full: serve callbacks, then retry
            except KafkaException as exc:  # refused before sending, e.g. larger than allowed
                raise FatalError(
                    f"Kafka refused the message of {message.describe()}: {exc}"
                ) from exc
            else:
                return

    def _reset_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.purge()
            producer.flush(0)

    def close(self) -> None:
        if self._producer is not None:
            remaining = self._producer.flush(self._delivery_timeout)
            if remaining:
                logger.warning("%d Kafka message(s) undelivered at shutdown", remaining)
            self._producer = None
