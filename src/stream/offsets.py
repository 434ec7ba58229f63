"""Commit, per partition, the offset after the last message a worker has made durable,
and commit it again when the group takes the partition away (a rebalance)."""

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

Partition = tuple[str, int]


def next_offsets(messages: Sequence[Message]) -> dict[Partition, int]:
    """Per partition, the offset after the last of the messages (what a commit names)."""
    highest: dict[Partition, int] = {}
    for message in messages:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if message.error() is None and topic is not None and partition is not None:
            highest[(topic, partition)] = max(highest.get((topic, partition), -1), offset or 0)
    return {key: offset + 1 for key, offset in highest.items()}


def commit_offsets(
    consumer: Consumer, offsets: dict[Partition, int], *, asynchronous: bool = False
) -> dict[Partition, int]:
    """Commit the offsets of the partitions the consumer still owns; return those. One the
    group gave to another member meanwhile (a rebalance between reading and committing)
    is not committed: its new owner commits it, and what this worker did is skipped there."""
    owned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
    mine = {key: offset for key, offset in offsets.items() if key in owned}
    if not mine:
        return mine
    listed = [TopicPartition(t, p, o) for (t, p), o in mine.items()]
    if asynchronous:
        consumer.commit(offsets=listed, asynchronous=True)
        return mine
    try:
        consumer.commit(offsets=listed, asynchronous=False)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if not isinstance(error, KafkaError) or error.code() not in GROUP_MOVED_ON:
            raise
        log.warning("offsets not committed (%s): those messages come again", error.str())
    return mine


def commit_processed(
    consumer: Consumer, messages: Sequence[Message], *, asynchronous: bool = False
) -> None:
    commit_offsets(consumer, next_offsets(messages), asynchronous=asynchronous)


class FinishedOffsets:
    """Per partition a worker owns, the offset after the last message it finished. Its
    commits go asynchronously, so the next batch need not wait for the broker; when the
    group revokes partitions, what was finished in them is committed synchronously before
    they go, so their next owner starts where this worker stopped (the idempotence
    markers stay the second line, for a worker killed before it could)."""

    def __init__(self) -> None:
        self._next: dict[Partition, int] = {}

    def commit(
        self, consumer: Consumer, messages: Sequence[Message], *, asynchronous: bool = True
    ) -> None:
        self._next.update(
            commit_offsets(consumer, next_offsets(messages), asynchronous=asynchronous)
        )

    def revoked(self, consumer: Consumer, partitions: Sequence[TopicPartition]) -> None:
        """Commit what was finished in the partitions, and wait for the broker's answer."""
        gone = self.forget(partitions)
        if gone:
            commit_offsets(consumer, gone)
            log.info("committed %d partitions' finished offsets before they go", len(gone))

    def forget(self, partitions: Sequence[TopicPartition]) -> dict[Partition, int]:
        """Drop the partitions (lost: another member owns them already, and a commit
        would be refused); return what was finished in them."""
        return {
            key: offset
            for tp in partitions
            if (offset := self._next.pop(key := (tp.topic, tp.partition), None)) is not None
        }
