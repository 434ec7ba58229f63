"""The id rules, and item point ids: stable, integer, within Qdrant's range; a collision
is an error."""

from __future__ import annotations

import pytest

from batch import publish
from recsys.events import Event
from recsys.ids import MAX_ID_LENGTH, is_valid_id, item_point_id


@pytest.mark.parametrize("bad", ["", "a\n", "a b", "a/b", "é", "a" * (MAX_ID_LENGTH + 1)])
def test_an_id_is_the_whole_string_of_safe_characters(bad: str) -> None:
    assert is_valid_id("0108775015") and is_valid_id("a" * MAX_ID_LENGTH)
    assert not is_valid_id(bad)
    with pytest.raises(ValueError, match="customer_id"):
        Event(customer_id=bad, article_id="a1")


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
