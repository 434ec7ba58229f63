"""The per-process item catalogue: metadata and vectors by point and by article."""

from __future__ import annotations

import numpy as np

from recsys.index.item_catalog import ItemCatalog


def _payload(article_id: str, group: str) -> dict[str, str]:
    return {"article_id": article_id, "product_group_name": group}


def test_vectors_survive_growth_and_replacement() -> None:
    catalog = ItemCatalog()
    rng = np.random.default_rng(0)
    vectors = {f"a{i}": rng.normal(size=8).astype(np.float32) for i in range(3000)}
    catalog.extend((i, _payload(a, "G"), v) for i, (a, v) in enumerate(vectors.items()))
    catalog.add(-1, _payload("no-vector", "G"))
    assert len(catalog) == 3001
    got = catalog.vectors(["a0", "a2999", "missing", "no-vector", "a1500"])
    assert list(got) == ["a0", "a2999", "a1500"]
    for article_id, vector in got.items():
        np.testing.assert_array_equal(vector, vectors[article_id])
    # New metadata without a vector keeps the old vector; a new vector replaces it.
    catalog.add(0, _payload("a0", "H"))
    np.testing.assert_array_equal(catalog.vectors(["a0"])["a0"], vectors["a0"])
    assert catalog.metadata(["a0"]) == {"a0": {"product_group_name": "H"}}
    catalog.add(0, _payload("a0", "H"), np.ones(8))
    np.testing.assert_array_equal(catalog.vectors(["a0"])["a0"], np.ones(8, dtype=np.float32))


def test_hits_carry_a_copy_of_the_vector_only_when_asked() -> None:
    catalog = ItemCatalog()
    catalog.add(7, _payload("a", "G"), [1.0, 2.0])
    plain = catalog.hit(7, 0.5)
    assert plain.vector is None and plain.metadata == {"product_group_name": "G"}
    with_vector = catalog.hit(7, 0.5, with_vector=True)
    assert with_vector.vector is not None
    with_vector.vector[0] = 99.0  # the caller's copy, not the catalogue's row
    np.testing.assert_array_equal(catalog.vectors(["a"])["a"], [1.0, 2.0])
