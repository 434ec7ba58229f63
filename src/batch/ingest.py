"""Ingestion and cleaning as Spark jobs: the H&M CSVs as read into bronze, then typed and
validated rows out; bad rows are counted by reason and skipped, never fatal.

A missing file or column stops the run with one line naming it (`InputError`).
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pyarrow as pa

from batch import lake
from batch.lake import Lake
from recsys.events import (
    EARLIEST_EVENT,
    EVENT_TYPES,
    MAX_AHEAD,
    MAX_PRICE,
    RECEIVED_AT,
    RECEIVED_DATE,
)
from recsys.hm_schema import (
    ARTICLES_FILE,
    ARTICLES_SCHEMA,
    CUSTOMERS_FILE,
    CUSTOMERS_SCHEMA,
    TRANSACTIONS_FILE,
    TRANSACTIONS_SCHEMA,
)
from recsys.ids import MAX_ID_LENGTH, SPARK_ID_PATTERN
from recsys.settings import items_table_in

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import Column, DataFrame, SparkSession

REASON = "_skip_reason"
RECEIVED = "_received"
ROW = "_row"
# Purchases from the CSVs and purchases the API accepted since, told apart in silver.
SOURCE_CSV, SOURCE_EVENTS = "csv", "events"


class InputError(ValueError):
    """Input that cannot be used at all (a missing file or column): one line, names it."""


@dataclass
class TableReport:
    """Rows read and skipped for one input table, with the reasons rows were skipped."""

    name: str
    rows_in: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    @property
    def rows_skipped(self) -> int:
        return sum(self.skipped.values())


@dataclass
class Cleaned:
    """Valid, typed rows of the three inputs, and what was skipped on the way."""

    articles: DataFrame
    customers: DataFrame
    transactions: DataFrame
    reports: list[TableReport]
    written: dict[str, lake.Written] = field(default_factory=dict)


def _header(path: Path) -> list[str]:
    with path.open("r", encoding="utf-8", errors="replace", newline="") as handle:
        return [c.strip() for c in next(csv.reader(handle), [])]


def check_input(input_dir: Path) -> None:
    """Fail fast, before any Spark work, on a missing folder, file or column."""
    if not input_dir.is_dir():
        raise InputError(f"input folder not found: {input_dir}")
    for file, schema in (
        (ARTICLES_FILE, ARTICLES_SCHEMA),
        (CUSTOMERS_FILE, CUSTOMERS_SCHEMA),
        (TRANSACTIONS_FILE, TRANSACTIONS_SCHEMA),
    ):
        path = input_dir / file
        if not path.is_file():
            raise InputError(f"missing input file: {path}")
        missing = [name for name in schema.names if name not in _header(path)]
        if missing:
            raise InputError(f"{file}: missing column(s) {', '.join(missing)}")


INPUTS: Final = (
    ("articles", ARTICLES_FILE, ARTICLES_SCHEMA),
    ("customers", CUSTOMERS_FILE, CUSTOMERS_SCHEMA),
    ("transactions", TRANSACTIONS_FILE, TRANSACTIONS_SCHEMA),
)


def read_csv(spark: SparkSession, path: Path, schema: pa.Schema) -> DataFrame:
    """One CSV as read: every column text (no value can fail the file), picked by name.

    Quoted values may hold commas, doubled quotes and, in the articles' free text, line
    breaks; only that file is read multi-line (which cannot be split across tasks)."""
    from pyspark.sql import functions as F

    multiline = path.name == ARTICLES_FILE
    frame = (
        spark.read.option("header", "true")
        .option("escape", '"')
        .option("multiLine", str(multiline).lower())
        .csv(str(path))
    )
    # Row order is kept so "the first of duplicate ids wins" means the first line.
    return frame.select(*[F.col(f"`{c}`") for c in schema.names]).withColumn(
        ROW, F.monotonically_increasing_id()
    )


def load_bronze(store: Lake, input_dir: Path) -> dict[str, lake.Written]:
    """The CSVs as read into the bronze tables, less the rows of erased customers
    (recsys.erasure): an erasure outlives the input files that still hold them."""
    from batch.erased_rows import without_erased
    from recsys.erasure import erased_before

    check_input(input_dir)
    erased = erased_before(store.lake_dir)
    written = {}
    for name, file, schema in INPUTS:
        frame = read_csv(store.spark, input_dir / file, schema)
        if "customer_id" in schema.names:
            frame = without_erased(frame, erased, "t_dat" if "t_dat" in schema.names else None)
        written[name] = store.write(frame, "bronze", name)
    return written


def clean_purchases(spark: SparkSession, input_dir: Path) -> tuple[DataFrame, TableReport]:
    """Valid purchases straight from the CSVs (no tables written): the evaluation's input."""
    check_input(input_dir)
    frames = {name: read_csv(spark, input_dir / file, schema) for name, file, schema in INPUTS}
    articles, _ = clean_articles(frames["articles"])
    customers, _ = clean_customers(frames["customers"])
    return clean_transactions(frames["transactions"], articles, customers)


def _valid_id(col: Column) -> Column:
    from pyspark.sql import functions as F

    return col.isNotNull() & (F.length(col) <= MAX_ID_LENGTH) & col.rlike(SPARK_ID_PATTERN)


def _typed(frame: DataFrame, schema: pa.Schema) -> DataFrame:
    """Numbers that do not parse become null (a missing value, not a bad row)."""
    from pyspark.sql import functions as F

    columns = []
    for col in schema:
        if pa.types.is_integer(col.type):
            columns.append(F.col(col.name).try_cast("long").alias(col.name))
        elif pa.types.is_floating(col.type):
            columns.append(F.col(col.name).try_cast("double").alias(col.name))
        else:
            columns.append(F.col(col.name))
    return frame.select(*columns, REASON)


def _first_broken(rules: list[tuple[str, Column]]) -> Column:
    """Each row is charged to the first rule it breaks, so the reasons add up to the skips."""
    from pyspark.sql import functions as F

    reason = F.lit(None).cast("string")
    for name, broken in reversed(rules):
        reason = F.when(broken, F.lit(name)).otherwise(reason)
    return reason


def _split(frame: DataFrame, report: TableReport) -> DataFrame:
    """Count rows by skip reason (one pass) and keep the rows with none."""
    for row in frame.groupBy(REASON).count().collect():
        report.rows_in += int(row["count"])
        if row[REASON] is not None:
            report.skipped[str(row[REASON])] += int(row["count"])
    return frame.where(frame[REASON].isNull()).drop(REASON)


def _clean_entities(
    bronze: DataFrame, name: str, key: str, schema: pa.Schema
) -> tuple[DataFrame, TableReport]:
    """One row per valid id, the first line of duplicates kept, numbers typed."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    report = TableReport(name)
    later_duplicate = F.row_number().over(Window.partitionBy(key).orderBy(ROW)) > 1
    flagged = bronze.withColumn(
        REASON,
        _first_broken(
            [(f"invalid {key}", ~_valid_id(F.col(key))), (f"duplicate {key}", later_duplicate)]
        ),
    )
    return _split(_typed(flagged, schema), report), report


def clean_articles(bronze: DataFrame) -> tuple[DataFrame, TableReport]:
    frame, report = _clean_entities(bronze, "articles", "article_id", ARTICLES_SCHEMA)
    text = [c.name for c in ARTICLES_SCHEMA if pa.types.is_string(c.type)]
    return frame.fillna("", subset=text), report


def clean_customers(bronze: DataFrame) -> tuple[DataFrame, TableReport]:
    return _clean_entities(bronze, "customers", "customer_id", CUSTOMERS_SCHEMA)


def clean_transactions(
    bronze: DataFrame, articles: DataFrame, customers: DataFrame
) -> tuple[DataFrame, TableReport]:
    from pyspark.sql import functions as F

    report = TableReport("transactions")
    known_articles = articles.select("article_id", F.lit(True).alias("_known_article"))
    known_customers = customers.select("customer_id", F.lit(True).alias("_known_customer"))
    frame = (
        bronze.withColumn("t_dat", F.to_date(F.try_to_timestamp("t_dat", F.lit("yyyy-MM-dd"))))
        .withColumn("price", F.col("price").try_cast("double"))
        .join(F.broadcast(known_articles), "article_id", "left")
        .join(known_customers, "customer_id", "left")
    )
    flagged = frame.withColumn(
        REASON,
        _first_broken(
            [
                ("unparseable t_dat", F.col("t_dat").isNull()),
                ("invalid customer_id", ~_valid_id(F.col("customer_id"))),
                ("invalid article_id", ~_valid_id(F.col("article_id"))),
                ("unknown article_id", F.col("_known_article").isNull()),
                ("unknown customer_id", F.col("_known_customer").isNull()),
                ("negative or missing price", ~F.coalesce(F.col("price") >= 0, F.lit(False))),
            ]
        ),
    )
    valid = _split(flagged, report).select(
        "t_dat",
        "customer_id",
        "article_id",
        "price",
        F.coalesce(F.col("sales_channel_id").try_cast("long"), F.lit(0)).alias("sales_channel_id"),
        F.lit(SOURCE_CSV).alias("source"),
    )
    return valid, report


def clean(store: Lake) -> Cleaned:
    """Typed, valid rows from this run's bronze tables; items and customers are written to
    silver (and read back from there), transactions are left to the caller to complete.

    The items are articles.csv's and the articles the archiver took from the catalog topic
    (the archived row wins for an article in both): the index and the content placement
    then cover them, and purchases of them are known."""
    articles, a_report = clean_articles(lake.read(store, "bronze", "articles"))
    reports = [a_report]
    archived = archived_articles(store)
    if archived is not None:
        frame, i_report = archived
        articles = articles.join(frame.select("article_id"), "article_id", "left_anti")
        articles = articles.unionByName(frame)
        reports.append(i_report)
    written = {"silver.items": store.write(articles, "silver", "items")}
    customers, c_report = clean_customers(lake.read(store, "bronze", "customers"))
    written["silver.customers"] = store.write(customers, "silver", "customers")
    articles = lake.read(store, "silver", "items")
    customers = lake.read(store, "silver", "customers")
    transactions, t_report = clean_transactions(
        lake.read(store, "bronze", "transactions"), articles, customers
    )
    reports += [c_report, t_report]
    return Cleaned(articles, customers, transactions, reports, written)


def archived_articles(store: Lake) -> tuple[DataFrame, TableReport] | None:
    """The catalog topic's articles as the archiver wrote them (validated at the door, one
    row each), in the cleaned articles' columns; None when there is no table yet."""
    from pyspark.sql import functions as F

    snap = store.snapshot(items_table_in(store.lake_dir))
    if snap is None:
        return None
    text = [c.name for c in ARTICLES_SCHEMA if pa.types.is_string(c.type)]
    frame = _typed(snap.frame.withColumn(REASON, F.lit(None).cast("string")), ARTICLES_SCHEMA)
    report = TableReport("archived articles")
    return _split(frame, report).fillna("", subset=text), report


@dataclass
class ArchivedPurchases:
    frame: DataFrame
    report: TableReport
    # The newest event read: where a model trained on them stops knowing.
    last_ts: datetime | None
    # The Delta version read: promotion replays exactly the events added after it.
    table_version: int | None = None
    # Views, clicks and add-to-carts (t_dat, customer_id, article_id, event_type): never
    # purchases, only interactions, weighed by type (batch.interactions.with_signals).
    signals: DataFrame | None = None


def archived_purchases(
    store: Lake, events_table: Path, articles: DataFrame, erased: pd.DataFrame
) -> ArchivedPurchases | None:
    """Purchases the API accepted since the CSVs were cut, as transaction rows, and its
    views, clicks and add-to-carts as `signals` (None when the archiver has written
    nothing yet). Their customers may be new (not in customers.csv), so only the article
    is checked, after the event rule (recsys.events) every consumer applies: a row
    archived before a rule existed is skipped with its reason. An erased customer's
    events received before their erasure are left out (`erased`: erased_before's)."""
    from pyspark.sql import functions as F

    from batch.erased_rows import without_erased

    snap = store.snapshot(events_table)
    if snap is None:
        return None
    report = TableReport("archived events")
    events = without_erased(
        snap.frame.withColumn(RECEIVED, _received(snap.frame)), erased, "ts", RECEIVED
    )
    # Microseconds, not a timestamp: PySpark would hand a timestamp back in local time.
    totals = events.agg(
        F.count(F.lit(1)).alias("n"), F.max(F.unix_micros("ts")).alias("last")
    ).first()
    assert totals is not None
    report.rows_in = int(totals["n"])
    last = (
        None
        if totals["last"] is None
        else datetime.fromtimestamp(int(totals["last"]) / 1e6, tz=UTC)
    )
    known = articles.select("article_id", F.lit(True).alias("_known_article"))
    price = F.col("price").cast("double")
    latest = F.coalesce(F.col(RECEIVED), F.current_timestamp()) + F.expr(
        f"INTERVAL {int(MAX_AHEAD.total_seconds())} SECONDS"
    )
    known_type = F.coalesce(F.col("event_type").isin(*EVENT_TYPES), F.lit(False))
    in_window = (F.col("ts") >= F.lit(EARLIEST_EVENT)) & (F.col("ts") <= latest)
    bad_price = price.isNotNull() & (F.isnan(price) | (price < 0) | (price > MAX_PRICE))
    checked = events.join(F.broadcast(known), "article_id", "left").withColumn(
        REASON,
        _first_broken(
            [
                ("not an event type", ~known_type),
                ("invalid event_id", ~_valid_id(F.col("event_id"))),
                ("invalid customer_id", ~_valid_id(F.col("customer_id"))),
                ("invalid article_id", ~_valid_id(F.col("article_id"))),
                ("event time out of range", ~F.coalesce(in_window, F.lit(False))),
                ("price not finite or out of range", bad_price),
                ("unknown article_id", F.col("_known_article").isNull()),
            ]
        ),
    )
    for row in checked.where(F.col(REASON).isNotNull()).groupBy(REASON).count().collect():
        report.skipped[str(row[REASON])] += int(row["count"])
    valid = checked.where(F.col(REASON).isNull())
    frame = valid.where(F.col("event_type") == "purchase").select(
        F.to_date("ts").alias("t_dat"),
        "customer_id",
        "article_id",
        F.coalesce(price, F.lit(0.0)).alias("price"),
        # Events come through the API: the online channel.
        F.lit(2).cast("long").alias("sales_channel_id"),
        F.lit(SOURCE_EVENTS).alias("source"),
    )
    signals = valid.where(F.col("event_type") != "purchase").select(
        F.to_date("ts").alias("t_dat"), "customer_id", "article_id", "event_type"
    )
    return ArchivedPurchases(frame, report, last, snap.version, signals)


def _received(events: DataFrame) -> Column:
    """When the stack received each archived event (its broker time); a row archived
    before that was kept counts as received at the end of its received day."""
    from pyspark.sql import functions as F

    columns = set(events.columns)
    at = F.col(RECEIVED_AT) if RECEIVED_AT in columns else F.lit(None).cast("timestamp")
    if RECEIVED_DATE in columns:
        day_end = F.to_timestamp(F.date_add(F.col(RECEIVED_DATE), 1)) - F.expr(
            "INTERVAL 1 MILLISECOND"
        )
        at = F.coalesce(at, day_end)
    return at
