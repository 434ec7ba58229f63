"""What every item-index backend does, and the values it speaks in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy.typing as npt


@dataclass(frozen=True)
class ItemFilter:
    """Business rules applied inside the index: keep only these groups/types, drop those."""

    product_groups: Sequence[str] = ()
    product_types: Sequence[str] = ()
    exclude_ids: Sequence[str] = ()
    exclude_groups: Sequence[str] = ()
    exclude_types: Sequence[str] = ()

    def allows(self, article_id: str, payload: Mapping[str, Any]) -> bool:
        """The same rules applied to an item held outside the index (the trending list)."""
        group = payload.get("product_group_name")
        kind = payload.get("product_type_name")
        return not (
            (self.product_groups and group not in self.product_groups)
            or (self.product_types and kind not in self.product_types)
            or article_id in self.exclude_ids
            or group in self.exclude_groups
            or kind in self.exclude_types
        )


@dataclass(frozen=True)
class IndexedItem:
    """An item ready for the index: its vector and the payload that filters and describes it."""

    article_id: str
    vector: npt.NDArray[Any]
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class ScoredItem:
    article_id: str
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)


class ItemIndex(Protocol):
    """A loaded, read-only model version of the item index."""

    version: str

    def search(self, vector: npt.NDArray[Any], k: int, rules: ItemFilter) -> list[ScoredItem]:
        """The k items with the highest dot product with vector that pass rules."""
        ...

    def retrieve(self, article_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Payloads of the given items that exist in this version."""
        ...

    def close(self) -> None: ...


class IndexWriter(Protocol):
    """Builds one new model version of the index; nothing serves it before finish()."""

    def upsert(self, items: Sequence[IndexedItem]) -> None: ...

    def finish(self) -> None:
        """Build the ANN structures and make the version loadable."""
        ...
