"""Pieces every route shares: documented error responses and the item list encoding."""

from __future__ import annotations

from typing import Any

from recsys.index.base import ScoredItem
from serve.explain import Contribution
from serve.schemas import Explanation, RecommendedItem

Responses = dict[int | str, dict[str, Any]]
NOT_LIVE: Responses = {503: {"description": "No model version is live yet"}}
BAD_INPUT: Responses = {
    422: {"description": "A parameter is out of range or malformed; `detail` names it"}
}


def to_items(
    items: list[ScoredItem], explanations: dict[str, list[Contribution]] | None = None
) -> list[RecommendedItem]:
    return [
        RecommendedItem(
            article_id=i.article_id,
            score=i.score,
            metadata=i.metadata,
            explanation=(
                [
                    Explanation(
                        article_id=c.article_id, similarity=c.similarity, share_percent=c.share
                    )
                    for c in explanations.get(i.article_id, [])
                ]
                if explanations is not None
                else None
            ),
        )
        for i in items
    ]
