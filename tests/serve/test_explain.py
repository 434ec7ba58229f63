"""Explanations against a plain per-item computation of the same definition."""

from __future__ import annotations

import numpy as np
import pytest

from serve.explain import explain


def _reference(
    recommended: dict[str, np.ndarray], purchases: list[tuple[str, np.ndarray]], top_k: int
) -> dict[str, list[tuple[str, float, float]]]:
    out = {}
    for article_id, vector in recommended.items():
        sims = [
            (bought, float(np.dot(vector, v) / np.linalg.norm(vector) / np.linalg.norm(v)))
            for bought, v in purchases
        ]
        sims.sort(key=lambda pair: -pair[1])  # stable: ties keep purchase order
        chosen = sims[: min(top_k, len(sims))]
        weights = [max(s, 0.0) for _, s in chosen]
        total = sum(weights)
        shares = [w / total * 100 if total > 0 else 100 / len(chosen) for w in weights]
        out[article_id] = [(b, s, sh) for (b, s), sh in zip(chosen, shares, strict=True)]
    return out


@pytest.mark.parametrize("top_k", [1, 3, 10])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_explain_matches_the_definition(seed: int, top_k: int) -> None:
    rng = np.random.default_rng(seed)
    recommended = {f"r{i}": rng.normal(size=8).astype(np.float32) for i in range(10)}
    purchases = [(f"p{i}", rng.normal(size=8).astype(np.float32)) for i in range(6)]
    # Purchases in the positive orthant and one item opposed to all of them: no positive
    # similarity, so its purchases share equally.
    purchases = [(a, np.abs(v)) for a, v in purchases]
    recommended["opposed"] = -np.ones(8, dtype=np.float32)
    got = explain(recommended, purchases, top_k)
    want = _reference(recommended, purchases, top_k)
    assert list(got) == list(want)
    for article_id, contributions in got.items():
        expected = want[article_id]
        assert [c["article_id"] for c in contributions] == [b for b, _, _ in expected]
        assert [c["similarity"] for c in contributions] == pytest.approx(
            [s for _, s, _ in expected], abs=1e-5
        )
        assert [c["share_percent"] for c in contributions] == pytest.approx(
            [sh for _, _, sh in expected], abs=1e-4
        )
        assert sum(c["share_percent"] for c in contributions) == pytest.approx(100.0)
        assert all(c["share_percent"] >= 0 for c in contributions)
    equal = [100 / min(top_k, 6)] * min(top_k, 6)
    assert [c["share_percent"] for c in got["opposed"]] == pytest.approx(equal)


def test_nothing_to_explain() -> None:
    vector = np.ones(4, dtype=np.float32)
    assert explain({"a": vector}, [], 3) == {"a": []}
    assert explain({}, [("p", vector)], 3) == {}
