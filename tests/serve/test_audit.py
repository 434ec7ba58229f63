"""The audit line of each erasure, promotion and rollback over the API: one line on the
`recsys.audit` logger naming the admin key (never the key itself), the model versions and
the counts, and never the customer erased, nor its hash."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from batch.pipeline import BatchReport
from recsys.api_keys import new_key
from recsys.erasure import customer_hash
from recsys.logs import JsonFormatter
from recsys.settings import Settings
from serve.app import create_app
from support import two_versions

ADMIN_KEY, ADMIN_ENTRY = new_key(f"ops-{uuid.uuid4().hex[:6]}", "admin")
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def api(settings: Settings, trained: BatchReport, tmp_path: Path) -> Iterator[TestClient]:
    """An isolated stack (v1 live, v2 there to promote) with an admin key enforced."""
    own: Settings
    with two_versions(settings, trained.version, tmp_path / "data", db=9) as (own, _):
        keyed = own.model_copy(update={"auth_disabled": False, "api_keys": [ADMIN_ENTRY]})
        with TestClient(create_app(keyed)) as http:
            yield http


def _audit_line(caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    """The one audit line written since the last clear (it fails on none or several)."""
    (line,) = [r for r in caplog.records if r.name == "recsys.audit"]
    caplog.clear()
    assert ADMIN_KEY not in line.getMessage()
    return line


def test_a_promotion_and_a_rollback_each_write_one_audit_line(
    api: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="recsys.audit")
    name = ADMIN_ENTRY.name
    caplog.clear()
    assert api.post("/admin/models/v2/promote", headers=ADMIN).status_code == 200
    line = _audit_line(caplog).getMessage()
    assert line == (
        f"action=promote actor={name} outcome=done version=v2 previous=v1 "
        "replayed_events=0 applied=0 duplicates=0"
    )

    back = api.post("/admin/models/rollback", headers=ADMIN)
    assert back.json()["live_version"] == "v1"
    line = _audit_line(caplog).getMessage()
    assert line.startswith(f"action=rollback actor={name} outcome=done previous=v2 version=v1 ")

    # Nothing left to roll back to: refused (409), and the refusal is a line of its own.
    assert api.post("/admin/models/rollback", headers=ADMIN).status_code == 409
    line = _audit_line(caplog).getMessage()
    assert line == f"action=rollback actor={name} outcome=failed previous=v1 error=VersionError"

    # A refused key never reaches the action: no line.
    assert api.post("/admin/models/rollback").status_code == 401
    assert not [r for r in caplog.records if r.name == "recsys.audit"]


def test_an_erasure_writes_one_audit_line_without_the_customer(
    api: TestClient, caplog: pytest.LogCaptureFixture, transactions: pd.DataFrame
) -> None:
    caplog.set_level(logging.INFO, logger="recsys.audit")
    customer = str(transactions["customer_id"].value_counts().index[3])
    caplog.clear()
    erased = api.delete(f"/users/{customer}", headers=ADMIN)
    assert erased.status_code == 200, erased.text
    record = _audit_line(caplog)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["action"] == "erase" and entry["actor"] == ADMIN_ENTRY.name
    assert entry["outcome"] == "done"
    # The counts the answer gives (the customer's rows in both copies of the factors).
    assert entry["factor_rows"] == sum(erased.json()["factor_rows"].values()) == 2
    assert entry["redis_keys"] == erased.json()["redis_keys"]
    # Neither the id nor any piece of its hash: an erasure's line names no one.
    hashed = customer_hash(customer)
    for text in (record.getMessage(), json.dumps(entry)):
        assert customer not in text
        assert all(hashed[i : i + 8] not in text for i in range(0, 64 - 8))
