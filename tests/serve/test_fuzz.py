"""Property-based fuzzing of the OpenAPI schema (schemathesis): whatever the generated
input, the API never answers with a 5xx."""

from __future__ import annotations

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings


def test_no_input_makes_a_server_error(api: TestClient) -> None:
    """Every operation of the suite's app (its lifespan running on the real Redis, index
    and broker), a bounded number of generated requests each."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9
    for operation in operations:

        @settings(
            max_examples=40,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def no_server_error(case: schemathesis.Case) -> None:
            response = case.call()
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} {case.query}: "
                f"{response.status_code} {response.text}"
            )

        no_server_error()
