"""Time-decayed popularity as a Spark job: the fallback lists held in the model artefact.

Every article's score sums its purchases weighted 2^(-age/half_life), age in days from
the newest purchase. The job ranks the articles overall and within every product group
and type, keeps the rows some list needs (the gold `trending` table) and the driver turns
them into the lists the API holds in memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from recsys.trending_lists import SEGMENTS, Entry, TrendingLists

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

OVERALL_RANK = "rank_overall"


def _rank_column(segment: str) -> str:
    return f"rank_in_{segment}"


def trending_job(
    purchases: DataFrame,
    articles: DataFrame,
    *,
    half_life_days: float,
    size: int,
    segment_size: int,
    metadata_fields: tuple[str, ...],
) -> DataFrame:
    """One row per article on some list: its score, its ranks and its metadata."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    newest = purchases.agg(F.max("t_dat").alias("_newest"))
    age = F.datediff(F.col("_newest"), F.col("t_dat")).cast("double")
    scores = (
        purchases.crossJoin(F.broadcast(newest))
        .groupBy("article_id")
        .agg(F.sum(F.pow(F.lit(2.0), -age / F.lit(float(half_life_days)))).alias("score"))
        .join(articles.select("article_id", *metadata_fields), "article_id", "left")
        .fillna("", subset=list(metadata_fields))
    )
    # Ties go to the smaller id, so the lists are the same on every run.
    order = [F.col("score").desc(), F.col("article_id")]
    ranked = scores.withColumn(OVERALL_RANK, F.row_number().over(Window.orderBy(*order)))
    keep = F.col(OVERALL_RANK) <= size
    for segment in SEGMENTS:
        rank = F.row_number().over(Window.partitionBy(segment).orderBy(*order))
        ranked = ranked.withColumn(
            _rank_column(segment), F.when(F.col(segment) != "", rank).cast("int")
        )
        keep = keep | (F.col(_rank_column(segment)) <= segment_size)
    return ranked.where(keep)


def to_lists(
    rows: DataFrame, *, size: int, segment_size: int, metadata_fields: tuple[str, ...]
) -> TrendingLists:
    """The gold rows as the lists of the model artefact (best first)."""
    records: list[dict[str, Any]] = [row.asDict() for row in rows.collect()]

    def entry(record: dict[str, Any]) -> Entry:
        return {
            "article_id": str(record["article_id"]),
            "score": float(record["score"]),
            "metadata": {name: record[name] for name in metadata_fields},
        }

    overall = sorted(
        (r for r in records if r[OVERALL_RANK] <= size), key=lambda r: int(r[OVERALL_RANK])
    )
    by_segment: dict[str, dict[str, list[Entry]]] = {}
    for segment in SEGMENTS:
        rank = _rank_column(segment)
        lists: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            if record[rank] is not None and record[rank] <= segment_size:
                lists.setdefault(str(record[segment]), []).append(record)
        by_segment[segment] = {
            value: [entry(r) for r in sorted(part, key=lambda r: int(r[rank]))]
            for value, part in lists.items()
        }
    return TrendingLists(overall=[entry(r) for r in overall], by_segment=by_segment)
