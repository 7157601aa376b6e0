"""Settings refused at start-up: combinations, topic templates, an unparsable database_url.

No servers: the checks run before any connection is made.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from singer_sdk.exceptions import ConfigValidationError

from target_batched_postgres import kafka_writer
from target_batched_postgres.errors import ConfigError, FatalError, TransientError
from target_batched_postgres.identifiers import (
    MAX_TOPIC_CHARS,
    table_name_for_stream,
    topic_name,
    topic_template_problem,
)
from target_batched_postgres.kafka_writer import KafkaPublisher, build_admin_config
from target_batched_postgres.metrics import Metrics
from target_batched_postgres.postgres_writer import PostgresWriter, _scrubbed
from target_batched_postgres.retry import RetryPolicy
from target_batched_postgres.settings import check_combinations
from target_batched_postgres.sql import OnConflict
from target_batched_postgres.target import TargetBatchedPostgres

_LEGAL_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")

# -- kafka_only_tables / db_only_tables -------------------------------------------


def test_kafka_only_tables_with_kafka_off_by_default_are_refused() -> None:
    with pytest.raises(ConfigError) as raised:
        check_combinations({"kafka_only_tables": ["events", "audit"]}, env={})
    text = str(raised.value)
    assert "kafka_only_tables" in text
    assert "'events'" in text
    assert "'audit'" in text
    assert "kafka_enabled is false" in text
    assert "Empty kafka_only_tables" in text  # what to do about it


def test_kafka_only_tables_with_push_to_kafka_false_names_the_switch() -> None:
    config = {"kafka_enabled": True, "kafka_only_tables": ["events"]}
    config["kafka_enabled"] = False  # as apply_env_switches leaves it
    with pytest.raises(ConfigError, match=r"env PUSH_TO_KAFKA=false.*turn Kafka on"):
        check_combinations(config, env={"PUSH_TO_KAFKA": "false"})


def test_kafka_only_tables_with_kafka_on_pass() -> None:
    check_combinations({"kafka_enabled": True, "kafka_only_tables": ["events"]}, env={})
    check_combinations({"kafka_enabled": False, "kafka_only_tables": []}, env={})
    check_combinations({"kafka_enabled": False, "kafka_only_tables": None}, env={})


@pytest.mark.parametrize(
    ("kafka_only", "db_only"),
    [
        (["t"], ["t"]),
        (["orders"], ["Orders"]),  # the stream Orders: table orders
        (["Orders"], ["orders"]),
        (["order-items"], ["order_items"]),
    ],
)
def test_a_table_in_both_lists_is_refused(kafka_only: list[str], db_only: list[str]) -> None:
    config = {"kafka_enabled": True, "kafka_only_tables": kafka_only, "db_only_tables": db_only}
    with pytest.raises(ConfigError, match="both kafka_only_tables and db_only_tables"):
        check_combinations(config, env={})


def test_the_overlap_check_matches_names_as_routing_does() -> None:
    # route_for matches a list entry against the stream's name and its table's.
    for stream in ("Orders", "order-items", "t"):
        names = {stream, table_name_for_stream(stream)}
        for k in names:
            for d in names:
                with pytest.raises(ConfigError):
                    check_combinations(
                        {"kafka_enabled": True, "kafka_only_tables": [k], "db_only_tables": [d]},
                        env={},
                    )
    # "Orders" and "ORDERS" share a table but no stream matches both names.
    check_combinations(
        {"kafka_enabled": True, "kafka_only_tables": ["Orders"], "db_only_tables": ["ORDERS"]},
        env={},
    )
    check_combinations(
        {"kafka_enabled": True, "kafka_only_tables": ["a"], "db_only_tables": ["b"]}, env={}
    )


def test_the_target_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUSH_TO_KAFKA", "false")
    config = {
        "kafka_enabled": True,
        "kafka_bootstrap_servers": "127.0.0.1:1",
        "kafka_only_tables": ["events"],
    }
    with pytest.raises(ConfigValidationError, match="kafka_only_tables"):
        TargetBatchedPostgres(config=config)


# -- kafka_topic_template ------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "{tabel}-events",
        "{Table}",
        "{table}{",
        "events-{table}-{schema}",
        "",
        ".",
        "..",
        "events/{table}",
        "my events",
        "x" * 241 + "{table}",  # no room left for the table's name
        "x" * 250,
    ],
)
def test_bad_topic_templates_are_refused(template: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert topic_template_problem(template) is not None
    with pytest.raises(ConfigError, match=r"^kafka_topic_template "):
        check_combinations({"kafka_topic_template": template}, env={})
    # Refused with Kafka off too: a template that would fail once Kafka is
    # switched back on fails now, before the emergency is over.
    monkeypatch.setenv("PUSH_TO_KAFKA", "false")
    with pytest.raises(ConfigValidationError, match="kafka_topic_template"):
        TargetBatchedPostgres(config={"kafka_topic_template": template})


@pytest.mark.parametrize(
    "template",
    ["{table}", "{stream}", "events", "cdc.{stream}-{table}", "..{table}", "x" * 240 + "{table}"],
)
def test_good_topic_templates_pass(template: str) -> None:
    assert topic_template_problem(template) is None
    check_combinations({"kafka_topic_template": template}, env={})


def test_long_topic_names_keep_tables_apart() -> None:
    template = "x" * 238 + "-{table}"
    first = topic_name(template, "orders_of_customers", "orders")
    second = topic_name(template, "orders_of_suppliers", "orders")
    assert first != second
    for name in (first, second):
        assert len(name) == MAX_TOPIC_CHARS
        assert _LEGAL_TOPIC.fullmatch(name)
    long_stream = "s" * 300
    assert topic_name("{stream}", "t", long_stream) != topic_name(
        "{stream}", "t", long_stream + "x"
    )
    assert topic_name("{stream}", "t", long_stream) == topic_name("{stream}", "t", long_stream)
    assert topic_name("{table}", "orders", "Orders") == "orders"  # short names unchanged


@pytest.mark.parametrize("stream", [".", "..", ""])
def test_topic_names_kafka_refuses_are_made_legal(stream: str) -> None:
    name = topic_name("{stream}", "t", stream)
    assert _LEGAL_TOPIC.fullmatch(name)
    assert name not in (".", "..")


# -- database_url: a libpq parse error quotes the URL -------------------------------


def _writer(url: str) -> PostgresWriter:
    return PostgresWriter(
        url,
        "public",
        dead_letter_table="_dead_letters",
        on_conflict=OnConflict.DO_NOTHING,
        fail_on_record_error=False,
        retry=RetryPolicy(max_attempts=1, backoff_seconds=0),
        metrics=Metrics(),
    )


@pytest.mark.parametrize(
    "url",
    [
        "postgresql//drainer:S3CRETPW@127.0.0.1:1/app",
        "postgresql://drainer:S3CRET%zzPW@127.0.0.1:1/app",
        "host=127.0.0.1 password=S3CRETPW port=1 bogus=1",
        "host=127.0.0.1 password='S3CRETPW",
    ],
)
def test_an_unparsable_database_url_is_named_without_its_text(url: str) -> None:
    writer = _writer(url)
    with pytest.raises(ConfigError) as raised:
        writer.preflight()
    error = raised.value
    assert str(error).startswith("database_url: ")
    assert "S3CRET" not in str(error)
    # Nothing chained either: a traceback prints a chained error's text.
    assert error.__cause__ is None
    assert error.__suppress_context__


def test_connect_errors_quoting_the_password_are_scrubbed() -> None:
    error = _scrubbed(TransientError('connection is bad: invalid value "S3CRET"'), ["S3CRET"])
    assert type(error) is TransientError
    assert "S3CRET" not in str(error)
    assert "***" in str(error)
    fatal = _scrubbed(FatalError("x S3CRET y S3CRET"), ["S3CRET"])
    assert type(fatal) is FatalError
    assert str(fatal) == "x *** y ***"


# -- the Kafka preflight connects as the producer will --------------------------------


def test_admin_config_keeps_connection_settings_and_drops_producer_only_ones() -> None:
    producer = {
        "bootstrap.servers": "b:9093",
        "security.protocol": "SSL",
        "ssl.ca.location": "/ca.pem",
        "enable.ssl.certificate.verification": False,
        "ssl.endpoint.identification.algorithm": "none",
        "broker.address.family": "v4",
        "api.version.request": True,
        "socket.timeout.ms": 5000,
        "client.id": "drainer",
        "enable.idempotence": True,
        "acks": "all",
        "delivery.report.only.error": True,
        "linger.ms": 5,
        "compression.type": "lz4",
        "message.timeout.ms": 30000,
        "transactional.id": "x",
    }
    admin = build_admin_config(producer)
    assert admin == {
        "bootstrap.servers": "b:9093",
        "security.protocol": "SSL",
        "ssl.ca.location": "/ca.pem",
        "enable.ssl.certificate.verification": False,
        "ssl.endpoint.identification.algorithm": "none",
        "broker.address.family": "v4",
        "api.version.request": True,
        "socket.timeout.ms": 5000,
        "client.id": "drainer",
    }


def test_preflight_gives_the_admin_client_the_connection_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, Any] = {}

    class FakeAdmin:
        def __init__(self, config: dict[str, Any]) -> None:
            seen.update(config)

        def list_topics(self, timeout: float) -> None:
            return None

    class FakeProducer:
        def __init__(self, config: dict[str, Any]) -> None:
            pass

    monkeypatch.setattr(kafka_writer, "AdminClient", FakeAdmin)
    monkeypatch.setattr(kafka_writer, "Producer", FakeProducer)
    user = {
        "enable.ssl.certificate.verification": False,
        "broker.address.family": "v4",
        "api.version.request": False,
    }
    publisher = KafkaPublisher(
        "b:9093",
        user,
        delivery_timeout_seconds=5,
        retry=RetryPolicy(max_attempts=1, backoff_seconds=0),
        metrics=Metrics(),
    )
    publisher.preflight()
    assert {k: seen.get(k) for k in user} == user
    assert "enable.idempotence" not in seen
