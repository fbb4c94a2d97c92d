"""schemathesis against /openapi.json of the real app over HTTP: no 5xx, responses match their schemas."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is a dev dependency")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import response_schema_conformance  # noqa: E402


@pytest.fixture(scope="module")
def contract_url(small_pipeline):
    """Fast defaults and tight limits, so that every valid generated request finishes quickly."""
    from conftest import running

    from glide_api.config import ServiceConfig
    from glide_api.server import create_app

    config = ServiceConfig(base_steps="2", upsample_steps="2", max_steps=3, max_batch_size=2,
                           max_prompt_chars=200, sync_timeout=60)
    with running(create_app(config, pipeline=small_pipeline)) as url:
        yield url


@pytest.fixture(scope="module")
def api_schema(contract_url):
    return schemathesis.openapi.from_url(f"{contract_url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_never_answers_5xx_and_matches_its_schema(case) -> None:
    case.call_and_validate(checks=[not_a_server_error, response_schema_conformance], timeout=120)
