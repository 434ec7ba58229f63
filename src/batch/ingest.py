"""Raw H&M CSVs into typed, validated tables; bad rows are counted, not fatal."""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from batch.hm_schema import (
    ARTICLES_FILE,
    ARTICLES_SCHEMA,
    CUSTOMERS_FILE,
    CUSTOMERS_SCHEMA,
    TRANSACTIONS_FILE,
    TRANSACTIONS_SCHEMA,
)
from recsys.ids import ID_PATTERN, MAX_ID_LENGTH


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
class RawData:
    articles: pd.DataFrame
    customers: pd.DataFrame
    transactions: pd.DataFrame
    reports: list[TableReport]


def _read_as_strings(path: Path, schema: pa.Schema) -> pd.DataFrame:
    """Read every column as text so one bad value cannot fail the file; types come later."""
    if not path.is_file():
        raise InputError(f"missing input file: {path}")
    with path.open("r", encoding="utf-8", errors="replace", newline="") as handle:
        header = [c.strip() for c in next(csv.reader(handle), [])]
    missing = [name for name in schema.names if name not in header]
    if missing:
        raise InputError(f"{path.name}: missing column(s) {', '.join(missing)}")
    table = pacsv.read_csv(
        path,
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in schema.names},
            include_columns=list(schema.names),
            strings_can_be_null=True,
        ),
    )
    frame: pd.DataFrame = table.to_pandas()
    return frame


def _valid_ids(ids: pd.Series) -> pd.Series:
    return ids.notna() & (ids.str.len() <= MAX_ID_LENGTH) & ids.str.fullmatch(ID_PATTERN[1:-1])


def _numeric(frame: pd.DataFrame, schema: pa.Schema) -> None:
    for col in schema:
        if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
            frame[col.name] = pd.to_numeric(frame[col.name], errors="coerce")


def read_articles(input_dir: Path) -> tuple[pd.DataFrame, TableReport]:
    frame = _read_as_strings(input_dir / ARTICLES_FILE, ARTICLES_SCHEMA)
    report = TableReport("articles", rows_in=len(frame))
    ok = _valid_ids(frame["article_id"])
    report.skipped["invalid article_id"] += int((~ok).sum())
    frame = frame[ok]
    dup = frame["article_id"].duplicated()
    report.skipped["duplicate article_id"] += int(dup.sum())
    frame = frame[~dup].reset_index(drop=True)
    _numeric(frame, ARTICLES_SCHEMA)
    text_cols = [c.name for c in ARTICLES_SCHEMA if pa.types.is_string(c.type)]
    frame[text_cols] = frame[text_cols].fillna("")
    return frame, report


def read_customers(input_dir: Path) -> tuple[pd.DataFrame, TableReport]:
    frame = _read_as_strings(input_dir / CUSTOMERS_FILE, CUSTOMERS_SCHEMA)
    report = TableReport("customers", rows_in=len(frame))
    ok = _valid_ids(frame["customer_id"])
    report.skipped["invalid customer_id"] += int((~ok).sum())
    frame = frame[ok]
    dup = frame["customer_id"].duplicated()
    report.skipped["duplicate customer_id"] += int(dup.sum())
    frame = frame[~dup].reset_index(drop=True)
    _numeric(frame, CUSTOMERS_SCHEMA)
    return frame, report


def read_transactions(
    input_dir: Path, known_articles: pd.Series, known_customers: pd.Series
) -> tuple[pd.DataFrame, TableReport]:
    frame = _read_as_strings(input_dir / TRANSACTIONS_FILE, TRANSACTIONS_SCHEMA)
    report = TableReport("transactions", rows_in=len(frame))
    frame["t_dat"] = pd.to_datetime(frame["t_dat"], format="%Y-%m-%d", errors="coerce")
    _numeric(frame, TRANSACTIONS_SCHEMA)
    # Each row is charged to the first rule it breaks, so the reasons add up to the skips.
    rules: list[tuple[str, pd.Series]] = [
        ("unparseable t_dat", frame["t_dat"].isna()),
        ("invalid customer_id", ~_valid_ids(frame["customer_id"])),
        ("invalid article_id", ~_valid_ids(frame["article_id"])),
        ("unknown article_id", ~frame["article_id"].isin(known_articles)),
        ("unknown customer_id", ~frame["customer_id"].isin(known_customers)),
        ("negative or missing price", ~(frame["price"] >= 0)),
    ]
    bad = pd.Series(False, index=frame.index)
    for reason, broken in rules:
        newly = broken & ~bad
        report.skipped[reason] += int(newly.sum())
        bad |= newly
    frame = frame[~bad].reset_index(drop=True)
    frame["sales_channel_id"] = frame["sales_channel_id"].fillna(0).astype("int64")
    return frame, report


def read_input(input_dir: Path) -> RawData:
    """Read and validate the three CSVs of an H&M-schema folder."""
    if not input_dir.is_dir():
        raise InputError(f"input folder not found: {input_dir}")
    articles, a_report = read_articles(input_dir)
    customers, c_report = read_customers(input_dir)
    transactions, t_report = read_transactions(
        input_dir, articles["article_id"], customers["customer_id"]
    )
    return RawData(articles, customers, transactions, [a_report, c_report, t_report])


@dataclass
class ArchivedPurchases:
    frame: pd.DataFrame
    report: TableReport
    # The newest event read: where a model trained on them stops knowing.
    last_ts: datetime | None
    # The Delta version read: promotion replays exactly the events added after it.
    table_version: int | None = None


def read_archived_purchases(events_table: Path, known_articles: pd.Series) -> ArchivedPurchases:
    """Purchases the API accepted since the CSVs were cut, as transaction rows.

    Their customers may be new (not in customers.csv), so only the article is checked.
    """
    report = TableReport("archived events")
    try:
        table = DeltaTable(str(events_table))
        events = table.to_pandas(columns=["event_type", "customer_id", "article_id", "ts", "price"])
    except TableNotFoundError:
        return ArchivedPurchases(
            pd.DataFrame(columns=list(TRANSACTIONS_SCHEMA.names)), report, None
        )
    report.rows_in = len(events)
    last_ts = events["ts"].max().to_pydatetime() if len(events) else None
    events = events[events["event_type"] == "purchase"]
    unknown = ~events["article_id"].isin(known_articles)
    report.skipped["unknown article_id"] += int(unknown.sum())
    events = events[~unknown]
    frame = pd.DataFrame(
        {
            "t_dat": events["ts"].dt.tz_convert(None).dt.normalize().astype("datetime64[ns]"),
            "customer_id": events["customer_id"],
            "article_id": events["article_id"],
            "price": events["price"].fillna(0.0).astype("float64"),
            # Events come through the API: the online channel.
            "sales_channel_id": 2,
        }
    )
    return ArchivedPurchases(frame.reset_index(drop=True), report, last_ts, int(table.version()))
