"""The dead-letter topic, for the person who acts on it: read what is there with the
reasons, and send chosen messages back to the topic they came from once fixed (events,
dead-lettered by the updater or the archiver; catalogue messages, by the archiver).

A dead letter is the original message (bytes and key) with two headers, `reason` and
`source_topic`. Sending one back produces it (or the fixed event a user wrote for it)
onto the events topic and appends a marker to the dead-letter topic naming its offset,
so a list shows what is still to do, and the same letter is not sent twice by mistake:
a second copy of an event received days later is a new message to the updater (its
applied-event state is by broker time) and to the archive (its dedupe window is a day).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_NOT_AVAILABLE, Consumer, Message
from confluent_kafka import TopicPartition as Partition
from pydantic import ValidationError

from recsys.articles import CatalogMessage
from recsys.bus import EventBus
from recsys.events import Event, validation_reason
from recsys.settings import Settings

REASON: Final = "reason"
SOURCE_TOPIC: Final = "source_topic"
# Header of the marker a resend appends: the dead letter's offset on its partition.
RESENT: Final = "resent_offset"
# A read ends when the topic has been quiet this long after its end offsets were reached.
QUIET_S: Final = 0.5


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    dead_at: datetime | None  # when it was dead-lettered (the broker's time)
    reason: str
    source_topic: str
    key: bytes | None
    value: bytes
    resent: bool = False

    @property
    def ref(self) -> str:
        return ref_of(self.partition, self.offset)

    def as_json(self) -> dict[str, object]:
        """The letter as a line a user can edit: `event` is the message parsed as JSON
        where it is JSON, else its text in `raw`."""
        line: dict[str, object] = {
            "ref": self.ref,
            "reason": self.reason,
            "source_topic": self.source_topic,
            "dead_at": self.dead_at.isoformat() if self.dead_at else None,
            "key": self.key.decode(errors="replace") if self.key is not None else None,
        }
        try:
            line["event"] = json.loads(self.value)
        except ValueError:
            line["raw"] = self.value.decode(errors="replace")
        return line


def dead_letter_headers(reason: str, source_topic: str) -> list[tuple[str, str | bytes | None]]:
    """The headers every consumer puts on a dead letter: why, and where it came from."""
    return [(REASON, reason[:1000].encode()), (SOURCE_TOPIC, source_topic.encode())]


def ref_of(partition: int, offset: int) -> str:
    """How a user names a dead letter: its offset, or `partition:offset` past partition 0."""
    return str(offset) if partition == 0 else f"{partition}:{offset}"


def parse_ref(text: str) -> tuple[int, int]:
    """`12` or `0:12` as (partition, offset); ValueError names what is wrong."""
    parts = text.strip().split(":")
    if len(parts) > 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"not a dead letter's offset (N or PARTITION:N): {text[:40]!r}")
    return (int(parts[0]), int(parts[1])) if len(parts) == 2 else (0, int(parts[0]))


def _header(message: Message, name: str) -> str | None:
    for header in message.headers() or []:
        key, value = header[0], header[1]
        if key == name and value is not None:
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return None


def read_dead_letters(
    bus: EventBus, settings: Settings, timeout_s: float = 10.0
) -> list[DeadLetter]:
    """Every dead letter the topic still holds, oldest first, each marked if sent back."""
    consumer = bus.reader("recsys-dead-letters", **{"fetch.wait.max.ms": 50})
    try:
        topic = consumer.list_topics(settings.dlq_topic, timeout=timeout_s).topics.get(
            settings.dlq_topic
        )
        if topic is None or topic.error is not None:
            return []
        partitions = sorted(topic.partitions)
        ends = {
            p: consumer.get_watermark_offsets(Partition(settings.dlq_topic, p), timeout_s)[1]
            for p in partitions
        }
        consumer.assign([Partition(settings.dlq_topic, p, OFFSET_BEGINNING) for p in partitions])
        messages = _read_to_end(consumer, ends, timeout_s)
    finally:
        consumer.close()
    resent = {
        (m.partition() or 0, int(marker))
        for m in messages
        if (marker := _header(m, RESENT)) is not None and marker.isdigit()
    }
    letters = []
    for m in messages:
        if _header(m, RESENT) is not None:
            continue
        kind, millis = m.timestamp()
        partition, offset = m.partition() or 0, m.offset() or 0
        letters.append(
            DeadLetter(
                partition=partition,
                offset=offset,
                dead_at=None
                if kind == TIMESTAMP_NOT_AVAILABLE
                else datetime.fromtimestamp(millis / 1000, tz=UTC),
                reason=_header(m, REASON) or "",
                source_topic=_header(m, SOURCE_TOPIC) or settings.events_topic,
                key=m.key(),
                value=m.value() or b"",
                resent=(partition, offset) in resent,
            )
        )
    return letters


def _read_to_end(consumer: Consumer, ends: dict[int, int], timeout_s: float) -> list[Message]:
    """Everything up to the end offsets read at the start (and whatever came since, until
    the topic is quiet): the embedded broker reports ends per record batch, so reaching
    them is not taken as the end on its own."""
    messages: list[Message] = []
    reached: dict[int, int] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = consumer.consume(500, QUIET_S)
        real = [m for m in batch if m.error() is None]
        messages += real
        for m in real:
            reached[m.partition() or 0] = (m.offset() or 0) + 1
        done = all(reached.get(p, 0) >= end for p, end in ends.items())
        if not real and done:
            break
    return messages


@dataclass
class ResendReport:
    sent: list[str] = field(default_factory=list)  # refs
    refused: dict[str, str] = field(default_factory=dict)  # ref -> why it was not sent


@dataclass(frozen=True)
class Fix:
    """What to send back for one dead letter: its ref and the message bytes."""

    ref: str
    value: bytes


def fixes_from_lines(lines: Iterable[str]) -> list[Fix]:
    """A file of `as_json` lines, edited: each line's `event` (or `raw`) is what goes
    back. ValueError names the first line that is not such a line."""
    fixes = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
            ref = str(line["ref"])
            parse_ref(ref)
            if "event" in line:
                value = json.dumps(line["event"]).encode()
            else:
                value = str(line["raw"]).encode()
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"line {number}: not a dead letter line ({exc})") from None
        fixes.append(Fix(ref, value))
    return fixes


@dataclass(frozen=True)
class Checked:
    """A message that passed its topic's rule, as it goes back: key and bytes."""

    key: str
    value: bytes


def _checked(settings: Settings, topic: str, value: bytes) -> Checked:
    """The message by the rule of the topic it came from: an event (keyed by customer)
    or a catalogue message (keyed by article). ValidationError says what is wrong."""
    if topic == settings.catalog_topic:
        message = CatalogMessage.from_bytes(value)
        return Checked(message.key, message.to_bytes())
    event = Event.from_bytes(value)
    return Checked(event.customer_id, event.to_bytes())


def resend(
    bus: EventBus,
    settings: Settings,
    letters: Sequence[DeadLetter],
    fixes: Sequence[Fix],
    *,
    again: bool = False,
) -> ResendReport:
    """Send each fix back to the topic its letter came from (keyed as that topic is) if
    it now passes that topic's rule, its letter is in the topic, and it was not sent
    back before (unless `again`); then mark its letter as sent. Waits for the broker's
    acknowledgement of every message."""
    report = ResendReport()
    by_ref = {letter.ref: letter for letter in letters}
    ready: list[tuple[DeadLetter, Checked]] = []
    for fix in fixes:
        partition, offset = parse_ref(fix.ref)
        ref = ref_of(partition, offset)
        letter = by_ref.get(ref)
        if letter is None:
            report.refused[ref] = "no such dead letter in the topic"
        elif letter.resent and not again:
            report.refused[ref] = "sent back before (--again sends it once more)"
        else:
            try:
                ready.append((letter, _checked(settings, letter.source_topic, fix.value)))
            except ValidationError as exc:
                report.refused[ref] = f"still not valid: {validation_reason(exc)}"
    if not ready:
        return report
    producer = bus.producer()
    failed: list[str] = []

    def delivered(err: object, _message: Message) -> None:
        if err is not None:
            failed.append(str(err))

    for letter, checked in ready:
        producer.produce(letter.source_topic, key=checked.key.encode(),
                         value=checked.value, on_delivery=delivered)  # fmt: skip
    if producer.flush(settings.kafka_produce_timeout_s + 1.0) or failed:
        raise RuntimeError(f"the broker did not take the events: {failed or 'timed out'}")
    for letter, _ in ready:
        producer.produce(settings.dlq_topic, partition=letter.partition, value=b"",
                         headers=[(RESENT, str(letter.offset).encode())],
                         on_delivery=delivered)  # fmt: skip
        report.sent.append(letter.ref)
    if producer.flush(settings.kafka_produce_timeout_s + 1.0) or failed:
        raise RuntimeError(f"sent back, but not marked as sent: {failed or 'timed out'}")
    return report
