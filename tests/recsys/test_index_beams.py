"""The batch chooses each version's HNSW beams on the index it built: the narrowest of
each query shape that reaches the recall target against exact search."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from recsys.index.base import FILTERED_SEARCH_EF, SEARCH_EF, Beams, IndexedItem, ItemFilter
from recsys.index.beams import BEAM_CHOICES, BeamSearch, calibrate_beams
from recsys.index.edge import EdgeIndexWriter, EdgeItemIndex

DIM, ITEMS, GROUPS = 16, 20_000, ("Upper", "Lower", "Shoes", "Bags")


def _catalogue() -> tuple[npt.NDArray[np.str_], npt.NDArray[np.float32], list[str]]:
    """Clustered vectors (items of a group near one another, as trained ones are), enough
    of them for the engine to build a graph and walk it under a group filter."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(40, DIM))
    vectors = centres[rng.integers(0, 40, ITEMS)] + 0.6 * rng.normal(size=(ITEMS, DIM))
    ids = np.asarray([f"{i:010d}" for i in range(ITEMS)])
    return ids, vectors.astype(np.float32), [GROUPS[i % len(GROUPS)] for i in range(ITEMS)]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ids, vectors, groups = _catalogue()
    shard = tmp_path_factory.mktemp("beams") / "shard"
    writer = EdgeIndexWriter(shard, DIM)
    writer.upsert([IndexedItem(str(a), v, {"product_group_name": g})
                   for a, v, g in zip(ids, vectors, groups, strict=True)])  # fmt: skip
    writer.finish()
    return shard


def _exact_top(vectors: npt.NDArray[np.float32], among: npt.NDArray[np.bool_],
               probe: npt.NDArray[np.float32]) -> set[int]:  # fmt: skip
    rows = np.flatnonzero(among)
    return set(rows[np.argsort(-(vectors[rows] @ probe))[:10]].tolist())


def test_the_chosen_beams_reach_the_target_on_customers_they_were_not_chosen_on(
    built: Path, tmp_path: Path
) -> None:
    ids, vectors, groups = _catalogue()
    rng = np.random.default_rng(8)
    customers = vectors[rng.integers(0, ITEMS, 1_000)] + rng.normal(size=(1_000, DIM))
    index = EdgeItemIndex("v1", built, tmp_path / "a")

    def search(vector: npt.NDArray[np.float32], rules: ItemFilter, beam: int) -> Sequence[str]:
        return [h.article_id for h in index.search(vector, 10, rules, beam=beam)]

    try:
        chosen = calibrate_beams(search, ids, vectors, groups, frozenset(),
                                 customers[:500].astype(np.float32), 0.99)  # fmt: skip
    finally:
        index.close()
    beams = chosen.beams
    # Each shape starts at its default and widens in order until it reaches the target.
    for shape, start in (("unfiltered", SEARCH_EF), ("filtered", FILTERED_SEARCH_EF)):
        tried = [t for t in chosen.trials if t.shape == shape]
        assert [t.beam for t in tried] == [b for b in BEAM_CHOICES if b >= start][: len(tried)]
        assert all(t.worst < 0.99 for t in tried[:-1])
        assert tried[-1].worst >= 0.99 or tried[-1].beam == BEAM_CHOICES[-1]
        assert tried[-1].beam == getattr(beams, shape)
    assert {t.worst_group for t in chosen.trials if t.shape == "filtered"} <= set(GROUPS)
    # Served with them, customers the calibration never saw get that recall too.
    served = EdgeItemIndex("v1", built, tmp_path / "b", beams=beams)
    try:
        assert served.beams == beams
        shoes = np.asarray(groups) == "Shoes"
        for rules, among in ((ItemFilter(), np.ones(ITEMS, dtype=bool)),
                             (ItemFilter(product_groups=("Shoes",)), shoes)):  # fmt: skip
            found = 0
            for probe in customers[500:700].astype(np.float32):
                got = {int(h.article_id) for h in served.search(probe, 10, rules)}
                found += len(got & _exact_top(vectors, among, probe))
            assert found / 2_000 >= 0.97, rules
    finally:
        served.close()


def _answers_right_from(
    beam_needed: int, vectors: npt.NDArray[np.float32], groups: list[str]
) -> BeamSearch:
    """An index stand-in for the choice alone: exact answers from `beam_needed` on under a
    filter, and half of them wrong below it; unfiltered always exact."""
    groups_array = np.asarray(groups)

    def search(vector: npt.NDArray[np.float32], rules: ItemFilter, beam: int) -> list[str]:
        among = (np.isin(groups_array, list(rules.product_groups)) if rules.product_groups
                 else np.ones(len(groups), dtype=bool))  # fmt: skip
        top = sorted(_exact_top(vectors, among, vector))
        if rules.product_groups and beam < beam_needed:
            top = top[:5] + [-1] * 5
        return [f"{i:010d}" for i in top]

    return search


@pytest.mark.parametrize("needed", [FILTERED_SEARCH_EF, 192, 10_000])
def test_the_choice_is_the_narrowest_that_reaches_the_target_else_the_widest(
    needed: int,
) -> None:
    ids, vectors, groups = _catalogue()
    probes = np.random.default_rng(1).normal(size=(50, DIM)).astype(np.float32)
    chosen = calibrate_beams(_answers_right_from(needed, vectors, groups), ids, vectors,
                             groups, frozenset(), probes, 0.95)  # fmt: skip
    assert chosen.beams.unfiltered == SEARCH_EF
    assert chosen.beams.filtered == min(needed, BEAM_CHOICES[-1])
    filtered = [t for t in chosen.trials if t.shape == "filtered"]
    assert filtered[-1].recall == (1.0 if needed <= BEAM_CHOICES[-1] else 0.5)
    assert chosen.probes == 50 and chosen.target == 0.95


def test_unavailable_items_are_not_in_the_truth() -> None:
    """The index never returns them, so recall is measured without them."""
    ids, vectors, groups = _catalogue()
    probes = np.random.default_rng(2).normal(size=(20, DIM)).astype(np.float32)
    hidden = {str(a) for a in ids[::2]}
    shown = np.asarray([a not in hidden for a in ids])

    def search(vector: npt.NDArray[np.float32], rules: ItemFilter, beam: int) -> list[str]:
        among = shown & (np.isin(groups, list(rules.product_groups)) if rules.product_groups
                         else True)  # fmt: skip
        return [f"{i:010d}" for i in _exact_top(vectors, among, vector)]

    chosen = calibrate_beams(search, ids, vectors, groups, hidden, probes, 0.999)
    assert all(t.recall == 1.0 for t in chosen.trials)
    assert chosen.beams == Beams()
