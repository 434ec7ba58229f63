"""Trending lists of a model version: global, and per product group and type, so the
fallback can honour the same filters as personalised results."""

from __future__ import annotations

import heapq
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from recsys.index.base import ItemFilter, ScoredItem

Entry = dict[str, Any]  # {"article_id", "score", "metadata"}
SEGMENTS = ("product_group_name", "product_type_name")


@dataclass(frozen=True)
class TrendingLists:
    overall: list[Entry]
    # segment field -> value -> entries, best first
    by_segment: dict[str, dict[str, list[Entry]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"overall": self.overall, "by_segment": self.by_segment}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrendingLists:
        return cls(overall=raw["overall"], by_segment=raw.get("by_segment", {}))

    @cached_property
    def _scores(self) -> dict[str, float]:
        scores = {e["article_id"]: float(e["score"]) for e in self.overall}
        for lists in self.by_segment.values():
            for entries in lists.values():
                scores.update((e["article_id"], float(e["score"])) for e in entries)
        return scores

    def score(self, article_id: str) -> float:
        """The article's trending score; 0 when it is on no list."""
        return self._scores.get(article_id, 0.0)

    def _pool(self, rules: ItemFilter) -> list[Entry]:
        """The narrowest lists the filter allows: per type, else per group, else overall."""
        for segment, wanted in (
            ("product_type_name", rules.product_types),
            ("product_group_name", rules.product_groups),
        ):
            if wanted:
                lists = [self.by_segment.get(segment, {}).get(value, []) for value in wanted]
                return list(heapq.merge(*lists, key=lambda e: -float(e["score"])))
        return self.overall

    def top(
        self, k: int, rules: ItemFilter, unavailable: AbstractSet[str] = frozenset()
    ) -> list[ScoredItem]:
        """The best k the rules allow, less the articles marked unavailable since (the
        index's set: recsys.availability)."""
        out: list[ScoredItem] = []
        for entry in self._pool(rules):
            aid = entry["article_id"]
            if aid not in unavailable and rules.allows(aid, entry["metadata"]):
                out.append(
                    ScoredItem(entry["article_id"], float(entry["score"]), entry["metadata"])
                )
                if len(out) == k:
                    break
        return out
