"""The business rules as one Qdrant filter, in Qdrant's own JSON form.

Both backends run this filter inside the engine (on keyword payload indexes), so a rule
is defined once: the server backend hands it to qdrant-client as is, the embedded one
translates it into Qdrant Edge's objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from recsys.availability import AVAILABLE_FIELD
from recsys.ids import item_point_id
from recsys.index.base import ItemFilter

FilterSpec = dict[str, list[dict[str, Any]]]
# Fields the filters run on; each gets a keyword payload index in every backend.
INDEXED_FIELDS = ("article_id", "product_group_name", "product_type_name")
# ... and this one a bool index (on the server: the embedded engine filters it by id).
BOOL_INDEXED_FIELDS = (AVAILABLE_FIELD,)
# An item marked unavailable: every query leaves it out.
UNAVAILABLE: dict[str, Any] = {"key": AVAILABLE_FIELD, "match": {"value": False}}


def _match_any(key: str, values: Sequence[str]) -> dict[str, Any]:
    return {"key": key, "match": {"any": list(values)}}


def filter_spec(rules: ItemFilter, *, hide_unavailable: bool = True) -> FilterSpec | None:
    """None when no rule applies. `hide_unavailable=False` only where the caller knows
    no item is marked unavailable (the embedded index, which holds every payload)."""
    must: list[dict[str, Any]] = []
    must_not: list[dict[str, Any]] = [UNAVAILABLE] if hide_unavailable else []
    if rules.product_groups:
        must.append(_match_any("product_group_name", rules.product_groups))
    if rules.product_types:
        must.append(_match_any("product_type_name", rules.product_types))
    if rules.exclude_ids:
        must_not.append({"has_id": sorted({item_point_id(a) for a in rules.exclude_ids})})
    if rules.exclude_groups:
        must_not.append(_match_any("product_group_name", rules.exclude_groups))
    if rules.exclude_types:
        must_not.append(_match_any("product_type_name", rules.exclude_types))
    if not must and not must_not:
        return None
    spec: FilterSpec = {}
    if must:
        spec["must"] = must
    if must_not:
        spec["must_not"] = must_not
    return spec
