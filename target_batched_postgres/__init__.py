"""target-batched-postgres: column-signature batches, Kafka first, then PostgreSQL."""
