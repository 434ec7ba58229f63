"""Item point ids: stable, integer, within Qdrant's range; a collision is an error."""

from __future__ import annotations

import pytest

from batch import publish
from recsys.ids import item_point_id


def test_point_ids_are_stable_63_bit_integers_without_collisions_on_many_ids() -> None:
    ids = [f"{n:010d}" for n in range(200_000)]
    points = [item_point_id(a) for a in ids]
    assert all(isinstance(p, int) and 0 <= p < 2**63 for p in points)
    assert len(set(points)) == len(points)
    assert item_point_id("0108775015") == item_point_id("0108775015")
    publish.check_point_ids(ids)


def test_a_point_id_collision_fails_the_index_write(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publish, "item_point_id", lambda article_id: 7)
    with pytest.raises(publish.PointIdCollisionError, match="'a' and 'b'"):
        publish.check_point_ids(["a", "b"])
