"""Pieces every route shares: documented error responses and the item list encoding.

Item lists (recommendations, similar items, popular) are the hot path: they are built as
plain dicts and encoded by orjson in one call, skipping FastAPI's validate-then-serialise
of the response model (a third of a request's CPU). Each route still declares its
response model, which documents the body; tests hold every body to that model.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from recsys.index.base import ScoredItem
from serve.explain import Contribution

Responses = dict[int | str, dict[str, Any]]
NOT_LIVE: Responses = {503: {"description": "No model version is live yet"}}
BAD_INPUT: Responses = {
    422: {"description": "A parameter is out of range or malformed; `detail` names it"}
}


class JsonBody(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def item_dicts(
    items: list[ScoredItem], explanations: dict[str, list[Contribution]] | None = None
) -> list[dict[str, Any]]:
    """Items as `RecommendedItem` bodies; `explanation` is null unless it was asked for."""
    return [
        {
            "article_id": i.article_id,
            "score": i.score,
            "metadata": i.metadata,
            "explanation": None if explanations is None else explanations.get(i.article_id, []),
        }
        for i in items
    ]
