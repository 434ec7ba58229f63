"""Commit, per partition, the offset after the last message a worker has made durable."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

log = logging.getLogger(__name__)

# The group moved on under the worker (a rebalance, or a broker that restarted and forgot
# the group): the work is durable and idempotent, so the messages come again to whoever
# owns the partition next and are skipped there; the worker goes on and rejoins.
GROUP_MOVED_ON = frozenset(
    {
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError._TRANSPORT,
    }
)


def commit_processed(
    consumer: Consumer, messages: Sequence[Message], *, asynchronous: bool = False
) -> None:
    highest: dict[tuple[str, int], int] = {}
    for message in messages:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if message.error() is None and topic is not None and partition is not None:
            highest[(topic, partition)] = max(highest.get((topic, partition), -1), offset or 0)
    if not highest:
        return
    offsets = [TopicPartition(t, p, o + 1) for (t, p), o in highest.items()]
    if asynchronous:
        consumer.commit(offsets=offsets, asynchronous=True)
        return
    try:
        consumer.commit(offsets=offsets, asynchronous=False)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if not isinstance(error, KafkaError) or error.code() not in GROUP_MOVED_ON:
            raise
        log.warning("offsets not committed (%s): those messages come again", error.str())
