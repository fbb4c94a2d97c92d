"""/openapi.json is the truth: what the real app answers over HTTP is what its document says.

schemathesis fuzzes every operation (deterministic: fixed seeds) and checks each answer's status,
content type, headers and body against the document; the answers a fuzzer rarely reaches (keys,
limits, streams, not ready) are sent on purpose and checked the same way. Driven through hypothesis
directly (not schemathesis' pytest plugin, which depends on pytest internals that change between
releases).
"""

from __future__ import annotations

import contextlib
import json
import os

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is a dev dependency")
import requests  # noqa: E402
from hypothesis import HealthCheck, given, seed, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Answers that are not server faults but are 5xx by design, for the requests made to get them.
DOCUMENTED_5XX = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_OPERATION = 25
# Another seed explores other cases: GLIDE_API_CONTRACT_SEED=7 python -m pytest tests/test_openapi_contract.py
SEED = int(os.environ.get("GLIDE_API_CONTRACT_SEED", "0"))
PROMPT_CHARS = 200
USER, ADMIN = "user-key", "admin-key"


def tight_config(**overrides):
    """Few steps and small limits: every valid generated request finishes in well under a second,
    and no request (nor the step routes, bounded by max_steps) can make a later one slow."""
    from glide_api.config import ServiceConfig

    settings = dict(
        data_dir="none",
        base_steps="2",
        upsample_steps="2",
        max_steps=3,
        max_batch_size=2,
        max_prompt_chars=PROMPT_CHARS,
        sync_timeout=60,
    )
    return ServiceConfig(**(settings | overrides))


@pytest.fixture(scope="module")
def contract_url(small_pipeline):
    from conftest import running

    from glide_api.server import create_app

    with running(create_app(tight_config(), pipeline=small_pipeline)) as url:
        yield url


@pytest.fixture(scope="module")
def keyed_url(small_pipeline):
    """With a user key, an admin key and a tight rate limit."""
    from conftest import running

    from glide_api.server import create_app

    config = tight_config(api_keys=(USER,), admin_keys=(ADMIN,), rate_limit=30, max_body_bytes=2048)
    with running(create_app(config, pipeline=small_pipeline)) as url:
        yield url


def load_schema(url: str):
    return schemathesis.openapi.from_dict(requests.get(f"{url}/openapi.json", timeout=10).json())


def conforms(schema, method: str, path: str, response: requests.Response, checks=CHECKS, **case) -> None:
    """`response` (to a request made by hand) is what the document says `method path` answers;
    `case` describes the request to the checks."""
    schema[path][method].Case(**case).validate_response(response, checks=checks)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzzed_requests_get_only_the_answers_the_document_gives(contract_url, mode) -> None:
    """Valid requests (positive) and requests that break the document (negative, which must also be
    refused with a 4xx) on every operation."""
    schema = load_schema(contract_url)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 17
    checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])
    for i, op in enumerate(operations):

        @seed(SEED * 1000 + i)
        @given(case=op.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case) -> None:
            case.call_and_validate(base_url=contract_url, checks=checks, timeout=60)

        with contextlib.suppress(Unsatisfiable):  # nothing to negate: no parameters, no body
            check()


def test_every_error_answer_is_documented_with_the_one_error_schema(contract_url) -> None:
    document = requests.get(f"{contract_url}/openapi.json", timeout=10).json()
    assert {"HTTPError", "ValidationError"}.isdisjoint(document["components"]["schemas"])
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            for status, response in op["responses"].items():
                if int(status) < 400 or path == "/readyz":
                    continue
                schema = response["content"]["application/json"]["schema"]
                assert schema["allOf"] == [{"$ref": "#/components/schemas/ErrorOut"}], (method, path, status)
                codes = schema["properties"]["error"]["properties"]["code"]["enum"]
                assert len(response["description"].splitlines()) >= len(codes) >= 1, (method, path, status)
            assert "414" in op["responses"], (method, path)
            if path not in ("/healthz", "/readyz"):
                assert {"401", "429"} <= set(op["responses"]), (method, path)


def test_the_document_states_the_bounds_this_server_is_configured_with(contract_url) -> None:
    document = requests.get(f"{contract_url}/openapi.json", timeout=10).json()
    body = document["components"]["schemas"]["GenerationIn"]["properties"]
    assert body["prompt"]["maxLength"] == PROMPT_CHARS and body["prompt"]["minLength"] == 1
    assert body["n"]["maximum"] == 2
    steps = document["paths"]["/basemodel"]["post"]["parameters"][0]
    assert steps["name"] == "diffusion_steps" and steps["schema"]["maximum"] == 3
    assert "x-configured" not in json.dumps(document)


@pytest.mark.parametrize(
    ("prompt", "valid"),
    [
        ("", False),
        ("  \t ", False),
        ("a", True),
        (" a ", True),
        ("a" * PROMPT_CHARS, True),
        ("a" * (PROMPT_CHARS + 1), False),
    ],
)
def test_the_prompt_rule_is_the_same_in_the_document_and_the_code(contract_url, prompt, valid) -> None:
    import jsonschema_rs  # schemathesis' validator

    document = requests.get(f"{contract_url}/openapi.json", timeout=10).json()
    rule = document["components"]["schemas"]["GenerationIn"]["properties"]["prompt"]
    assert jsonschema_rs.validator_for(rule).is_valid(prompt) is valid
    response = requests.post(
        f"{contract_url}/v1/generations",
        json={"prompt": prompt},
        headers={"Prefer": "respond-async"},
        timeout=30,
    )
    assert response.status_code == (202 if valid else 400), response.text
    if not valid:
        assert response.json()["error"]["param"] == "prompt"


def test_a_job_its_events_and_its_image_are_answered_as_documented(contract_url) -> None:
    schema = load_schema(contract_url)
    body = {"prompt": "a red square", "seed": 1}
    accepted = requests.post(
        f"{contract_url}/v1/generations", json=body, headers={"Prefer": "respond-async"}, timeout=30
    )
    conforms(schema, "POST", "/v1/generations", accepted, body=body, headers={"Prefer": "respond-async"})
    job_id = accepted.json()["id"]
    events = requests.get(f"{contract_url}/v1/jobs/{job_id}/events", timeout=30)
    conforms(schema, "GET", "/v1/jobs/{job_id}/events", events, path_parameters={"job_id": job_id})
    assert "event: succeeded" in events.text
    image = requests.get(f"{contract_url}/v1/jobs/{job_id}/images/0.png", timeout=30)
    assert image.status_code == 200
    conforms(
        schema,
        "GET",
        "/v1/jobs/{job_id}/images/{index}.png",
        image,
        path_parameters={"job_id": job_id, "index": 0},
    )
    resumed = requests.get(
        f"{contract_url}/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "x"}, timeout=30
    )
    assert resumed.status_code == 400
    conforms(schema, "GET", "/v1/jobs/{job_id}/events", resumed, path_parameters={"job_id": job_id})


def test_an_openai_stream_is_answered_as_documented(contract_url) -> None:
    schema = load_schema(contract_url)
    body = {"prompt": "a red square", "stream": True, "partial_images": 1}
    streamed = requests.post(f"{contract_url}/v1/images/generations", json=body, timeout=30)
    conforms(schema, "POST", "/v1/images/generations", streamed, body=body)
    assert streamed.headers["Content-Type"].startswith("text/event-stream")
    assert "event: image_generation.completed" in streamed.text


def test_key_limit_and_size_errors_are_answered_as_documented(keyed_url) -> None:
    schema = load_schema(keyed_url)
    user = {"Authorization": f"Bearer {USER}"}
    url = keyed_url
    paths = schema.raw_schema["paths"]
    assert paths["/v1/jobs"]["get"]["security"] == [{"BearerAuth": []}]
    assert "security" not in paths["/healthz"]["get"]

    no_key = requests.get(f"{url}/v1/jobs", timeout=10)
    assert no_key.status_code == 401
    conforms(schema, "GET", "/v1/jobs", no_key)

    forbidden = requests.post(f"{url}/basemodel", params={"diffusion_steps": 2}, headers=user, timeout=10)
    assert forbidden.status_code == 403
    conforms(schema, "POST", "/basemodel", forbidden, query={"diffusion_steps": 2})

    unknown = requests.get(f"{url}/v1/jobs/nope", headers=user, timeout=10)
    assert unknown.status_code == 404
    conforms(schema, "GET", "/v1/jobs/{job_id}", unknown, path_parameters={"job_id": "nope"})

    too_large = requests.post(f"{url}/v1/generations", json={"prompt": "x" * 4096}, headers=user, timeout=10)
    assert too_large.status_code == 413
    conforms(schema, "POST", "/v1/generations", too_large, body={"prompt": "x"})

    not_json = requests.post(
        f"{url}/v1/generations", data="{}", headers=user | {"Content-Type": "text/plain"}, timeout=10
    )
    assert not_json.status_code == 415
    conforms(schema, "POST", "/v1/generations", not_json, body={"prompt": "x"})

    long_url = requests.get(
        f"{url}/image", params={"size": 32, "prompt": "x" * 9000}, headers=user, timeout=10
    )
    assert long_url.status_code == 414
    conforms(schema, "GET", "/image", long_url, query={"size": 32, "prompt": "x"})

    rate_limited = next(
        r
        for r in (requests.get(f"{url}/v1/settings", headers=user, timeout=10) for _ in range(40))
        if r.status_code == 429
    )
    conforms(schema, "GET", "/v1/settings", rate_limited)


def test_readiness_and_not_ready_answers_are_documented() -> None:
    from conftest import running

    from glide_api.server import create_app

    # The models never load (load_models=False): every route that needs them answers 503.
    with running(create_app(tight_config(), load_models=False)) as url:
        schema = load_schema(url)
        ready = requests.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["ready"] is False
        conforms(schema, "GET", "/readyz", ready, checks=DOCUMENTED_5XX)
        body = {"prompt": "a red square"}
        refused = requests.post(f"{url}/v1/generations", json=body, timeout=10)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "not_ready"
        conforms(schema, "POST", "/v1/generations", refused, checks=DOCUMENTED_5XX, body=body)


def test_a_ready_server_answers_readiness_as_documented(contract_url) -> None:
    schema = load_schema(contract_url)
    ready = requests.get(f"{contract_url}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["ready"] is True
    conforms(schema, "GET", "/readyz", ready)


def test_each_documented_cause_is_what_the_error_table_answers() -> None:
    from glide_api import errors as e
    from glide_api.server import create_app, openapi
    from glide_api.server.errors import error_for

    outcomes = ("cancelled", "failed", "stopped", "timed_out")
    job = {outcome: e.JobFailed("job j", job_id="j", outcome=outcome) for outcome in outcomes}
    sent_by = {
        openapi.INVALID: e.InvalidParameter("prompt: must not be empty"),
        openapi.KEY_REUSED: e.IdempotencyKeyReused("Idempotency-Key: used for another request"),
        openapi.KEY_JOB_GONE: e.IdempotencyKeyReused("Idempotency-Key: job j is gone", job_id="j"),
        openapi.FORBIDDEN: e.Forbidden("authorization: an admin key"),
        openapi.NOT_FOUND: e.JobNotFound("no job 'j'"),
        openapi.NOT_FINISHED: e.NoResult("job j has no images"),
        openapi.CANCELLED: job["cancelled"],
        openapi.UPLOAD_TOO_LARGE: e.TooLarge("image: too many pixels"),
        openapi.QUEUE_FULL: e.QueueFull("queue full", retry_after=3),
        openapi.JOB_FAILED: job["failed"],
        openapi.NOT_READY: e.ModelNotReady("loading"),
        openapi.SHUTTING_DOWN: e.EngineClosed("closed"),
        openapi.STOPPED: job["stopped"],
        openapi.SYNC_BUSY: e.ServerBusy("max_sync_waits: busy", retry_after=5),
        openapi.STREAMS_BUSY: e.ServerBusy("max_open_streams: busy", retry_after=5),
        openapi.KEY_BUSY: e.ServerBusy("Idempotency-Key: still being submitted", retry_after=1),
        openapi.TIMED_OUT: job["timed_out"],
    }
    guard = {openapi.URL_TOO_LONG, openapi.NO_KEY, openapi.RATE_LIMITED, openapi.BAD_BODY}
    guard |= {openapi.BODY_TOO_LARGE, openapi.UNSUPPORTED_TYPE}  # sent over HTTP in the tests above
    causes = {value for value in vars(openapi).values() if isinstance(value, openapi.Cause)}
    assert causes == set(sent_by) | guard
    with create_app(tight_config(), load_models=False).app_context():
        for cause, error in sent_by.items():
            response = error_for(error)
            assert response.status_code == cause.status, cause
            assert response.get_json()["error"]["code"] == cause.code, cause
            assert {name for name, _ in cause.headers} <= set(response.headers.keys()), cause
            assert ("`job_id`" in cause.when) == ("job_id" in response.get_json()["error"]), cause
