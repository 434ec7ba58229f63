"""A/B experiments: definitions, deterministic assignment, the Redis ledger of impressions
and attributed purchases, the significance test and its Prometheus view."""
