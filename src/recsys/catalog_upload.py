"""`recsys catalog upsert` and `recsys catalog availability`: an H&M-schema articles CSV
(or an `article_id,available` CSV) validated row by row with the model of POST /items
(or POST /items/availability), and the good rows published to the catalog topic."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from confluent_kafka import KafkaError, Message, Producer
from pydantic import ValidationError

from recsys.articles import Article, Availability, CatalogMessage

Row = TypeVar("Row", Article, Availability)


class CatalogFileError(ValueError):
    """A file that cannot be read as articles at all: one line, names the problem."""


@dataclass(frozen=True)
class BadRow:
    line: int  # where the row starts in the file (1 is the header)
    problems: tuple[str, ...]  # "field: reason"

    def __str__(self) -> str:
        return f"line {self.line}: {'; '.join(self.problems)}"


@dataclass
class CatalogFile(Generic[Row]):
    records: list[Row] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.records) + len(self.bad)


def count_lines(path: Path) -> int:
    """The file's lines (a progress bar's total), header included."""
    try:
        with path.open("rb") as handle:
            return sum(1 for _ in handle)
    except OSError as exc:
        raise CatalogFileError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _rows(path: Path, required: Sequence[str]) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """(first line, last line, row) of each record; a quoted description may span lines."""
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise CatalogFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with handle:
        reader = csv.DictReader(handle)
        missing = [name for name in required if name not in (reader.fieldnames or [])]
        if missing:
            raise CatalogFileError(f"{path.name}: missing column(s) {', '.join(missing)}")
        start = reader.line_num + 1
        for row in reader:
            yield start, reader.line_num, row
            start = reader.line_num + 1


def read_catalog_file(
    path: Path, model: type[Row], advance: Callable[[int], None] | None = None
) -> CatalogFile[Row]:
    """Every row validated as `model`; a later row with an article_id seen before is bad
    (the first wins, as in the batch's cleaning). `advance` is told of the lines read."""
    fields = tuple(model.model_fields)
    required = tuple(name for name, f in model.model_fields.items() if f.is_required())
    out: CatalogFile[Row] = CatalogFile()
    first_line: dict[str, int] = {}
    read = 0
    for line, last, row in _rows(path, required):
        if advance is not None:
            advance(last - read)
            read = last
        # Unknown columns are not the article's; a short row's missing cells are absent.
        values = {k: v for k, v in row.items() if k in fields and v is not None}
        try:
            record = model.model_validate(values)
        except ValidationError as exc:
            problems = tuple(
                f"{'.'.join(str(p) for p in e['loc']) or 'row'}: {e['msg']}" for e in exc.errors()
            )
            out.bad.append(BadRow(line, problems))
            continue
        seen = first_line.setdefault(record.article_id, line)
        if seen != line:
            out.bad.append(BadRow(line, (f"article_id: {record.article_id} is on line {seen}",)))
            continue
        out.records.append(record)
    return out


def catalog_messages(records: Sequence[Article | Availability]) -> list[CatalogMessage]:
    """One message per record, all with one time: a later upload is newer everywhere."""
    now = datetime.now(UTC)
    return [
        CatalogMessage.upsert(r, now)
        if isinstance(r, Article)
        else CatalogMessage.set_availability(r, now)
        for r in records
    ]


def publish_messages(
    producer: Producer,
    topic: str,
    messages: Sequence[CatalogMessage],
    *,
    timeout_s: float,
    advance: Callable[[int], None] | None = None,
) -> int:
    """Publish each message (keyed by its article id) and wait for the broker's acks;
    return how many it did not acknowledge."""
    failed = [0]

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failed[0] += 1
        if advance is not None:
            advance(1)

    for message in messages:
        while True:
            try:
                producer.produce(
                    topic,
                    key=message.topic_key.encode(),
                    value=message.to_bytes(),
                    on_delivery=delivered,
                )
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(timeout_s)
    return failed[0] + int(left)
