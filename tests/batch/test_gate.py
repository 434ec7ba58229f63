"""The promotion gate's decision."""

from __future__ import annotations

from datetime import UTC, datetime

from batch.gate import decide
from recsys.model_store import Manifest


def _manifest(ndcg: float | None) -> Manifest:
    return Manifest(
        version="v", created_at=datetime.now(UTC), trainer="implicit", params={}, dim=2,
        users=1, items=1, data_version={}, cutoff=datetime.now(UTC), user_norm_median=1.0,
        train_seconds=0.0, metrics={} if ndcg is None else {"holdout_ndcg_at_10": ndcg},
    )  # fmt: skip


def test_first_version_goes_live() -> None:
    assert decide(_manifest(0.1), None, 0.02, force=False).promote


def test_within_the_margin_is_promoted() -> None:
    assert decide(_manifest(0.19), _manifest(0.20), 0.02, force=False).promote


def test_worse_than_the_margin_waits_unless_forced() -> None:
    held = decide(_manifest(0.15), _manifest(0.20), 0.02, force=False)
    assert not held.promote
    assert "below live" in held.reason
    assert decide(_manifest(0.15), _manifest(0.20), 0.02, force=True).promote


def test_missing_metrics_do_not_block() -> None:
    assert decide(_manifest(None), _manifest(0.2), 0.02, force=False).promote
