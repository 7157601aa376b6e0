"""The target's settings: JSON Schema for `--about`, and the operators' env switches."""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from typing import Any

from singer_sdk import typing as th

from target_batched_postgres.errors import ConfigError
from target_batched_postgres.identifiers import table_name_for_stream, topic_template_problem
from target_batched_postgres.nul_bytes import NulBytes
from target_batched_postgres.sql import OnConflict

CONFIG_SCHEMA = th.PropertiesList(
    th.Property(
        "database_url",
        th.StringType,
        secret=True,
        description=(
            "libpq connection URL or DSN of the destination PostgreSQL, e.g. "
            "`postgresql://user:password@host:5432/db`. Empty: libpq's PG* environment "
            "variables and defaults."
        ),
    ),
    th.Property(
        "default_target_schema",
        th.StringType,
        default="public",
        description="PostgreSQL schema that holds the tables (created if missing).",
    ),
    th.Property(
        "insert_batch_size",
        th.IntegerType(minimum=1),
        default=100,
        description=(
            "Records per column-signature bucket before it is flushed as one statement. "
            "Env `INSERT_BATCH_SIZE` overrides it."
        ),
    ),
    th.Property(
        "max_batches_per_statement",
        th.IntegerType(minimum=1),
        default=32,
        description=(
            "When PostgreSQL falls behind, the batches of one table that are all waiting "
            "for it are written in one statement, up to this many (fewer, larger commits, "
            "so PostgreSQL catches up), also past other tables' batches waiting between "
            "them: batches of one column signature always, of several when the statement "
            "over all their columns writes the same rows (no left-out column has a "
            "default; not with on_conflict=upsert). 1: one statement per batch."
        ),
    ),
    th.Property(
        "max_statements_in_flight",
        th.IntegerType(minimum=1, maximum=8),
        default=2,
        description=(
            "Batch inserts sent to PostgreSQL before the first one's result is read "
            "(libpq pipeline mode, each statement its own transaction), so that the server "
            "goes on to the next while the client takes a result; used while batches back "
            "up. 1: wait for each statement's result before sending the next (for a "
            "connection pooler or proxy without pipeline support)."
        ),
    ),
    th.Property(
        "batched_create_enabled",
        th.BooleanType,
        default=True,
        description=(
            "false: every record takes the individual path (Kafka, then one INSERT), the "
            "old drainer's behaviour, kept as the emergency switch. Env "
            "`BATCHED_CREATE_ENABLED` overrides it."
        ),
    ),
    th.Property(
        "max_batch_age_seconds",
        th.NumberType(exclusive_minimum=0),
        default=60,
        description="A bucket whose oldest record is older than this is flushed.",
    ),
    th.Property(
        "on_conflict",
        th.StringType,
        allowed_values=[e.value for e in OnConflict],
        default=OnConflict.DO_NOTHING.value,
        description=(
            "Insert of an existing key: `do_nothing` (a replayed create is a success, as "
            "the drainer did), `error` (the row is dead-lettered), or `upsert` (update the "
            "row on the stream's key properties)."
        ),
    ),
    th.Property(
        "on_record_error",
        th.StringType,
        allowed_values=["dead_letter", "fail"],
        default="dead_letter",
        description=(
            "A record PostgreSQL still rejects when written alone: `dead_letter` it and go "
            "on, or `fail` the run."
        ),
    ),
    th.Property(
        "dead_letter_table",
        th.StringType,
        default="_dead_letters",
        description="Table (in `default_target_schema`) for rejected records.",
    ),
    th.Property(
        "nul_bytes",
        th.StringType,
        allowed_values=[e.value for e in NulBytes],
        default=NulBytes.REJECT.value,
        description=(
            "A string holding a NUL byte (U+0000), which PostgreSQL cannot store in text or "
            "jsonb: `reject` dead-letters the record, its reason naming the column (the row "
            "is kept exactly as sent); `strip` removes U+0000 from every string of the "
            "record before it is published or written."
        ),
    ),
    th.Property(
        "kafka_enabled",
        th.BooleanType,
        default=False,
        description=(
            "Publish records to Kafka before writing PostgreSQL. Env `PUSH_TO_KAFKA` overrides it."
        ),
    ),
    th.Property(
        "kafka_bootstrap_servers",
        th.StringType,
        description="Kafka bootstrap servers, `host:port[,host:port]`.",
    ),
    th.Property(
        "kafka_topic_template",
        th.StringType,
        default="{table}",
        description=(
            "Topic per table; `{table}` and `{stream}` are replaced (the only placeholders), "
            "the rest may hold letters, digits, `.`, `_` and `-` (checked at start). A topic "
            "name over 249 characters is shortened with a hash suffix."
        ),
    ),
    th.Property(
        "kafka_publish_deletes",
        th.BooleanType,
        default=False,
        description=(
            'Publish a delete event (`{"where": ...}`, header `operation=delete`) for '
            "each delete; the old drainer published none."
        ),
    ),
    th.Property(
        "kafka_only_tables",
        th.ArrayType(th.StringType),
        default=[],
        description=(
            "Tables published to Kafka only; PostgreSQL gets their force-drained records. "
            "Refused at start while Kafka is off (`kafka_enabled` false or "
            "`PUSH_TO_KAFKA=false`) or for a table also in `db_only_tables`."
        ),
    ),
    th.Property(
        "db_only_tables",
        th.ArrayType(th.StringType),
        default=[],
        description="Tables never published to Kafka.",
    ),
    th.Property(
        "kafka_producer_config",
        th.ObjectType(additional_properties=True),
        secret=True,
        default={},
        description=(
            "Extra librdkafka producer settings (TLS, SASL, compression...). "
            "`enable.idempotence`, `acks=all` and `delivery.report.only.error` are always "
            "enforced."
        ),
    ),
    th.Property(
        "kafka_delivery_timeout_seconds",
        th.NumberType(exclusive_minimum=0),
        default=30,
        description="How long one produce attempt waits for acknowledgements.",
    ),
    th.Property(
        "max_attempts",
        th.IntegerType(minimum=1),
        default=5,
        description=(
            "Attempts for a transient failure (PostgreSQL connection lost, deadlock, "
            "Kafka delivery) before the run fails."
        ),
    ),
    th.Property(
        "retry_backoff_seconds",
        th.NumberType(minimum=0),
        default=1.0,
        description="First retry wait; doubles each attempt, capped at 10 s.",
    ),
    th.Property(
        "statement_timeout_seconds",
        th.NumberType(minimum=0),
        default=300,
        description=(
            "Longest a PostgreSQL statement, or its wait for a lock, may take; one cancelled "
            "after it is retried like a lost connection. 0: no limit."
        ),
    ),
    th.Property(
        "server_heap_warmup_mib",
        th.IntegerType(minimum=0, maximum=31),
        default=16,
        description=(
            "On each new connection, the PostgreSQL backend allocates and frees one block "
            "of this many MiB. On a glibc server that raises the backend's malloc thresholds "
            "(mallopt(3): freeing a mapped block sets the mmap threshold to its size, the "
            "trim threshold to twice that), so a batch statement's memory stays with the "
            "backend instead of going back to the kernel and being faulted in again by the "
            "next statement. The backend then keeps up to twice this much freed memory. "
            "0: off."
        ),
    ),
    th.Property(
        "schema_variation_threshold",
        th.IntegerType(minimum=1),
        default=3,
        description="Alert (`schema_variation_alert`) when a table shows more column signatures.",
    ),
).to_dict()

# Operator switches of the old drainer, honoured under their own names. They
# win over the config file: they are emergency switches.
ENV_SWITCHES: dict[str, tuple[str, type]] = {
    "INSERT_BATCH_SIZE": ("insert_batch_size", int),
    "BATCHED_CREATE_ENABLED": ("batched_create_enabled", bool),
    "PUSH_TO_KAFKA": ("kafka_enabled", bool),
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def apply_env_switches(
    config: MutableMapping[str, Any], env: Mapping[str, str] = os.environ
) -> None:
    """Override settings from the operator switches, naming a bad value's variable."""
    for var, (setting, kind) in ENV_SWITCHES.items():
        raw = env.get(var)
        if raw is None or raw.strip() == "":
            continue
        text = raw.strip().lower()
        if kind is bool:
            if text not in _TRUE | _FALSE:
                raise ConfigError(f"{var}={raw!r}: expected true or false")
            config[setting] = text in _TRUE
        else:
            try:
                config[setting] = int(text)
            except ValueError:
                raise ConfigError(f"{var}={raw!r}: expected an integer") from None


def setting(config: Mapping[str, Any], name: str) -> Any:
    """A setting's value, or its CONFIG_SCHEMA default when missing or null."""
    value = config.get(name)
    if value is None:
        return CONFIG_SCHEMA["properties"][name].get("default")
    return value


def _names(value: Any) -> list[str]:
    return [str(name) for name in value or []]


def check_combinations(config: Mapping[str, Any], env: Mapping[str, str] = os.environ) -> None:
    """Refuse settings that are valid one by one but not together (ConfigError).

    `config` is the raw config after `apply_env_switches` (missing settings
    take their defaults); `env` only says whether `PUSH_TO_KAFKA` turned Kafka off.
    """
    kafka_only = _names(setting(config, "kafka_only_tables"))
    db_only = _names(setting(config, "db_only_tables"))
    if kafka_only and not setting(config, "kafka_enabled"):
        switch = env.get("PUSH_TO_KAFKA", "").strip()
        why = f"env PUSH_TO_KAFKA={switch}" if switch else "kafka_enabled is false"
        raise ConfigError(
            f"kafka_only_tables {kafka_only} while Kafka is off ({why}): their records "
            "would go neither to Kafka nor to PostgreSQL. Empty kafka_only_tables to write "
            "those tables to PostgreSQL while Kafka is off, or turn Kafka on "
            "(kafka_enabled true, PUSH_TO_KAFKA=true)."
        )
    both = _in_both(kafka_only, db_only)
    if both:
        raise ConfigError(
            f"tables {both} are in both kafka_only_tables and db_only_tables (a stream "
            "matches by its name or its table's name): their records would go neither to "
            "Kafka nor to PostgreSQL. Remove each from one of the two lists."
        )
    template = str(setting(config, "kafka_topic_template"))
    problem = topic_template_problem(template)
    if problem is not None:
        raise ConfigError(f"kafka_topic_template {problem}")


def _in_both(kafka_only: list[str], db_only: list[str]) -> list[str]:
    """Names of the two lists that one stream can match, as the target's routing does.

    A stream's route looks up both its own name and its table's name
    (`table_name_for_stream`), so `Orders` in one list and `orders` in the
    other both match the stream `Orders`.
    """
    found = []
    for k in kafka_only:
        for d in db_only:
            if k == d or k == table_name_for_stream(d) or d == table_name_for_stream(k):
                found.append(k if k == d else f"{k}/{d}")
    return sorted(set(found))
