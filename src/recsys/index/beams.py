"""The HNSW beam width (ef) a model version's queries use, chosen on the version's own
index when the batch builds it.

How wide a beam has to be for a given recall depends on the vectors: at 100k items of
32 dimensions a beam of 32 found 0.995 of the exact top 10 and a filtered beam of 96
0.95 for the worst product group, while at 16 dimensions the same beams found 0.975
and 0.89 (docs/benchmarks.md, set G). So the batch measures: it queries the index it
has just built with a sample of its own customers' vectors, unfiltered and filtered on
each product group, compares with the exact answer, and keeps the narrowest beam of
each shape that reaches the target recall.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from recsys.index.base import Beams, ItemFilter

# The beams tried, narrowest first; a shape starts at its default (never narrower than
# the beams measured at 32 dimensions) and stops at the first that reaches the target.
BEAM_CHOICES: Final = (32, 48, 64, 96, 128, 192, 256, 384, 512)
# Customers' vectors queried: unfiltered, and filtered on each product group.
UNFILTERED_PROBES: Final = 400
FILTERED_PROBES: Final = 100
RECALL_AT: Final = 10
GROUP_FIELD: Final = "product_group_name"

Shape = Literal["unfiltered", "filtered"]
# The index's answer (article ids) to a query with these rules at this beam.
BeamSearch = Callable[[npt.NDArray[np.float32], ItemFilter, int], Sequence[str]]


class BeamTrial(BaseModel):
    """One beam tried on one shape: mean recall@10 against exact search, and the worst
    product group's (the same as the mean unfiltered)."""

    shape: Shape
    beam: int
    recall: float
    worst: float
    worst_group: str | None = None


class IndexCalibration(BaseModel):
    """What the batch measured on a version's index, kept in its manifest."""

    beams: Beams
    target: float
    probes: int
    trials: list[BeamTrial]


class _Truth:
    """The exact top k of each probe among the items the index would return."""

    def __init__(
        self,
        item_ids: npt.NDArray[Any],
        item_vectors: npt.NDArray[np.float32],
        unavailable: AbstractSet[str],
    ) -> None:
        self.ids = np.asarray([str(a) for a in item_ids], dtype=object)
        self.vectors = np.asarray(item_vectors, dtype=np.float32)
        self.shown = np.asarray([a not in unavailable for a in self.ids], dtype=bool)

    def top(self, probe: npt.NDArray[np.float32], among: npt.NDArray[np.bool_]) -> set[str]:
        candidates = np.flatnonzero(among & self.shown)
        if len(candidates) <= RECALL_AT:
            return {str(a) for a in self.ids[candidates]}
        scores = self.vectors[candidates] @ probe
        best = np.argpartition(-scores, RECALL_AT - 1)[:RECALL_AT]
        return {str(a) for a in self.ids[candidates[best]]}


Case = tuple[npt.NDArray[np.float32], ItemFilter, set[str]]


def _recall(search: BeamSearch, beam: int, cases: Sequence[Case]) -> float:
    found = total = 0
    for probe, rules, truth in cases:
        found += len(truth & set(search(probe, rules, beam)))
        total += len(truth)
    return found / total if total else 1.0


def _trial(search: BeamSearch, beam: int, shape: Shape, cases: dict[str, list[Case]]) -> BeamTrial:
    """Unfiltered, `cases` has one entry (None's); filtered, one per product group."""
    per_group = {group: _recall(search, beam, group_cases) for group, group_cases in cases.items()}
    worst = min(per_group, key=lambda g: per_group[g])
    return BeamTrial(
        shape=shape,
        beam=beam,
        recall=float(np.mean(list(per_group.values()))),
        worst=per_group[worst],
        worst_group=worst if shape == "filtered" else None,
    )


def calibrate_beams(
    search: BeamSearch,
    item_ids: npt.NDArray[Any],
    item_vectors: npt.NDArray[np.float32],
    item_groups: Sequence[str],
    unavailable: AbstractSet[str],
    probes: npt.NDArray[np.float32],
    target: float,
    *,
    seed: int = 0,
) -> IndexCalibration:
    """The narrowest beam of each shape whose recall@10 reaches `target` (filtered: in
    every product group), starting from the defaults; the widest tried when none does.
    `probes` are query vectors (the customers'), of which a sample is queried."""
    rng = np.random.default_rng(seed)
    picked = np.asarray(probes, dtype=np.float32)[rng.permutation(len(probes))[:UNFILTERED_PROBES]]
    truth = _Truth(item_ids, item_vectors, unavailable)
    groups = np.asarray([str(g) for g in item_groups], dtype=object)
    everything = np.ones(len(groups), dtype=bool)
    shapes: dict[Shape, dict[str, list[Case]]] = {
        "unfiltered": {"": [(p, ItemFilter(), truth.top(p, everything)) for p in picked]},
        "filtered": {
            group: [
                (p, ItemFilter(product_groups=(group,)), truth.top(p, groups == group))
                for p in picked[:FILTERED_PROBES]
            ]
            for group in sorted({str(g) for g in groups})
        },
    }
    defaults = Beams()
    starts: dict[Shape, int] = {"unfiltered": defaults.unfiltered, "filtered": defaults.filtered}
    chosen = dict(starts)
    trials: list[BeamTrial] = []
    for shape, cases in shapes.items():
        if not picked.size or not cases:
            continue
        for beam in (b for b in BEAM_CHOICES if b >= starts[shape]):
            trials.append(_trial(search, beam, shape, cases))
            chosen[shape] = beam
            if trials[-1].worst >= target:
                break
    return IndexCalibration(
        beams=Beams(unfiltered=chosen["unfiltered"], filtered=chosen["filtered"]),
        target=target,
        probes=len(picked),
        trials=trials,
    )
