"""Commit, per partition, the offset after the last message a worker has made durable."""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import Consumer, Message, TopicPartition


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
    else:
        consumer.commit(offsets=offsets, asynchronous=False)
