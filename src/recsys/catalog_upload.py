"""`recsys catalog upsert`: an H&M-schema articles CSV validated row by row with the
article model of POST /items, and the good rows published to the catalog topic."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from confluent_kafka import KafkaError, Message, Producer
from pydantic import ValidationError

from recsys.articles import Article, CatalogMessage

FIELDS: Final = tuple(Article.model_fields)
REQUIRED: Final = tuple(name for name, f in Article.model_fields.items() if f.is_required())


class CatalogFileError(ValueError):
    """A file that cannot be read as articles at all: one line, names the problem."""


@dataclass(frozen=True)
class BadRow:
    line: int  # where the row starts in the file (1 is the header)
    problems: tuple[str, ...]  # "field: reason"

    def __str__(self) -> str:
        return f"line {self.line}: {'; '.join(self.problems)}"


@dataclass
class CatalogFile:
    articles: list[Article] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.articles) + len(self.bad)


def count_lines(path: Path) -> int:
    """The file's lines (a progress bar's total), header included."""
    try:
        with path.open("rb") as handle:
            return sum(1 for _ in handle)
    except OSError as exc:
        raise CatalogFileError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _rows(path: Path) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """(first line, last line, row) of each record; a quoted description may span lines."""
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise CatalogFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with handle:
        reader = csv.DictReader(handle)
        missing = [name for name in REQUIRED if name not in (reader.fieldnames or [])]
        if missing:
            raise CatalogFileError(f"{path.name}: missing column(s) {', '.join(missing)}")
        start = reader.line_num + 1
        for row in reader:
            yield start, reader.line_num, row
            start = reader.line_num + 1


def read_catalog_file(path: Path, advance: Callable[[int], None] | None = None) -> CatalogFile:
    """Every row validated; a later row with an article_id seen before is bad (the first
    wins, as in the batch's cleaning). `advance` is told of the lines read."""
    out = CatalogFile()
    first_line: dict[str, int] = {}
    read = 0
    for line, last, row in _rows(path):
        if advance is not None:
            advance(last - read)
            read = last
        # Unknown columns are not the article's; a short row's missing cells are absent.
        values = {k: v for k, v in row.items() if k in FIELDS and v is not None}
        try:
            article = Article.model_validate(values)
        except ValidationError as exc:
            problems = tuple(
                f"{'.'.join(str(p) for p in e['loc']) or 'row'}: {e['msg']}" for e in exc.errors()
            )
            out.bad.append(BadRow(line, problems))
            continue
        seen = first_line.setdefault(article.article_id, line)
        if seen != line:
            out.bad.append(BadRow(line, (f"article_id: {article.article_id} is on line {seen}",)))
            continue
        out.articles.append(article)
    return out


def publish_articles(
    producer: Producer,
    topic: str,
    articles: Sequence[Article],
    *,
    timeout_s: float,
    advance: Callable[[int], None] | None = None,
) -> int:
    """Publish each article (keyed by its id) and wait for the broker's acks; return how
    many it did not acknowledge."""
    now = datetime.now(UTC)  # one time for the file: a later upload is newer everywhere
    failed = [0]

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failed[0] += 1
        if advance is not None:
            advance(1)

    for article in articles:
        message = CatalogMessage(ts=now, article=article)
        while True:
            try:
                producer.produce(
                    topic, key=message.key.encode(), value=message.to_bytes(), on_delivery=delivered
                )
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(timeout_s)
    return failed[0] + int(left)
