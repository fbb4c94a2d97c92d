"""schemathesis against /openapi.json of the real app over HTTP: no 5xx, responses match their schemas.

Driven through hypothesis directly (not schemathesis' pytest plugin, which depends on pytest
internals that change between releases).
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is a dev dependency")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import response_schema_conformance  # noqa: E402

EXAMPLES_PER_OPERATION = 5


@pytest.fixture(scope="module")
def contract_url(small_pipeline):
    """Fast defaults and tight limits, so that every valid generated request finishes quickly."""
    from conftest import running

    from glide_api.config import ServiceConfig
    from glide_api.server import create_app

    config = ServiceConfig(
        base_steps="2",
        upsample_steps="2",
        max_steps=3,
        max_batch_size=2,
        max_prompt_chars=200,
        sync_timeout=60,
    )
    with running(create_app(config, pipeline=small_pipeline)) as url:
        yield url


def test_api_never_answers_5xx_and_matches_its_schema(contract_url) -> None:
    schema = schemathesis.openapi.from_url(f"{contract_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case) -> None:
            case.call_and_validate(checks=[not_a_server_error, response_schema_conformance], timeout=120)

        check()
