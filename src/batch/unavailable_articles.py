"""Articles the catalog topic marked unavailable, as the archiver wrote them (Delta
`bronze/availability`, newest message per article): the batch writes them into the new
version's index as `available: false`, so a sold-out article stays out after a batch run
even once its message has left the topic."""

from __future__ import annotations

from dataclasses import dataclass, field

from batch.lake import Lake
from recsys.settings import availability_table_in


@dataclass(frozen=True)
class Unavailable:
    article_ids: frozenset[str] = field(default_factory=frozenset)
    table_version: int | None = None  # None: the archiver has written no table yet


def unavailable_articles(store: Lake) -> Unavailable:
    from pyspark.sql import functions as F

    snap = store.snapshot(availability_table_in(store.lake_dir))
    if snap is None:
        return Unavailable()
    rows = snap.frame.filter(~F.col("available")).select("article_id").collect()
    return Unavailable(frozenset(str(r.article_id) for r in rows), snap.version)
