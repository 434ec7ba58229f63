"""Property-based fuzzing of the OpenAPI schema (schemathesis): whatever the generated
input, the API never answers with a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.core import NOT_SET

from batch.pipeline import BatchReport
from recsys.api_keys import new_key
from recsys.settings import Settings
from serve.app import create_app
from support import new_topic

ADMIN_KEY, ADMIN_ENTRY = new_key("fuzz", "admin")


def _send(api: TestClient, case: schemathesis.Case) -> Any:
    """The case through the suite's own client: schemathesis's ASGI transport would run
    the app's lifespan again, and its shutdown would close the shared app's clients."""
    kwargs: dict[str, Any] = {"params": case.query or None, "headers": case.headers or None}
    if case.body is not None and case.body is not NOT_SET:
        kwargs["json"] = case.body
    return api.request(case.method, case.formatted_path, **kwargs)


@pytest.fixture(scope="module")
def api(settings: Settings, trained: BatchReport) -> Iterator[TestClient]:
    """The app on the suite's engines, with keys enforced (an admin key sent with every
    case, so customers' data and the writes are reached) and no limit on the key, but with
    a catalogue topic of its own: the articles the fuzz upserts must not land in the index
    the other tests query."""
    own = settings.model_copy(
        update={
            "catalog_topic": new_topic(settings, partitions=1),
            "auth_disabled": False,
            "api_keys": [ADMIN_ENTRY],
            "rate_limit_admin_per_s": 0,
        }
    )
    with TestClient(create_app(own), headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
        yield client


def test_no_input_makes_a_server_error(api: TestClient) -> None:
    """Every operation of the app (its lifespan running on the real Redis, index and
    broker), a bounded number of generated requests each."""
    schema = schemathesis.openapi.from_dict(api.get("/openapi.json").json())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9
    statuses: list[int] = []
    for operation in operations:
        # Erasures, promotions and catalogue upserts really run (each erasure scans Redis
        # and every Delta table): fewer of them keep the suite's time in bounds.
        writes = operation.method.upper() in {"DELETE", "POST"}

        @settings(
            max_examples=10 if writes else 40,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def no_server_error(case: schemathesis.Case) -> None:
            response = _send(api, case)
            statuses.append(response.status_code)
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} {case.query}: "
                f"{response.status_code} {response.text}"
            )

        no_server_error()
    # It did reach the endpoints, with accepted and refused input both.
    assert len(statuses) >= 100
    assert {200, 422} <= set(statuses)
