"""Keys, rate limits, size limits, CORS and readiness, over real HTTP."""

from __future__ import annotations

import logging

import pytest
import requests
from conftest import running

from glide_api.config import ServiceConfig
from glide_api.server import create_app

KEY = "sk-test-0123456789abcdef"


@pytest.fixture(scope="module")
def locked_url(small_pipeline):
    config = ServiceConfig(
        data_dir="none",
        api_keys=(KEY, "second-key"),
        rate_limit=30,
        max_body_bytes=2048,
        max_upload_bytes=4096,
    )
    with running(create_app(config, pipeline=small_pipeline)) as url:
        yield url


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_apis_need_a_valid_key_when_keys_are_configured(locked_url) -> None:
    for method, path in (
        ("get", "/v1/settings"),
        ("post", "/v1/generations"),
        ("get", "/image"),
        ("post", "/basemodel?diffusion_steps=5"),
        ("post", "/v1/images/generations"),
        ("get", "/metrics"),
    ):
        r = getattr(requests, method)(locked_url + path, timeout=10)
        assert r.status_code == 401, path
        assert r.json()["error"]["code"] == "invalid_api_key" and r.headers["WWW-Authenticate"] == "Bearer"

    def status(key: str) -> int:
        return requests.get(f"{locked_url}/v1/settings", headers=auth(key), timeout=10).status_code

    assert (status("wrong"), status(KEY), status("second-key")) == (401, 200, 200)


def test_page_docs_and_health_checks_stay_public(locked_url) -> None:
    for path in ("/", "/healthz", "/readyz", "/docs", "/openapi.json"):
        assert requests.get(locked_url + path, timeout=10).status_code == 200, path


def test_the_openai_client_sends_its_key_as_bearer(locked_url) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{locked_url}/v1", api_key=KEY, max_retries=0)
    result = client.images.generate(prompt="x", size="32x32", extra_body={"steps": "2"})
    assert result.data[0].b64_json
    bad = openai.OpenAI(base_url=f"{locked_url}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.images.generate(prompt="x", size="32x32")


def test_rate_limit_answers_429_with_retry_after(small_pipeline) -> None:
    with running(create_app(ServiceConfig(rate_limit=3), pipeline=small_pipeline)) as url:
        codes = [requests.get(f"{url}/v1/settings", timeout=10).status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[3] == 429
        r = requests.get(f"{url}/v1/settings", timeout=10)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
        assert requests.get(f"{url}/healthz", timeout=10).status_code == 200  # not limited


def test_oversized_bodies_are_413(locked_url) -> None:
    r = requests.post(f"{locked_url}/v1/generations", json={"prompt": "x" * 5000}, headers=auth(), timeout=10)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    big = b"\x89PNG" + b"0" * 1_200_000  # past the whole multipart limit
    r = requests.post(
        f"{locked_url}/v1/inpaint",
        data={"prompt": "x"},
        headers=auth(),
        files={"image": ("a.png", big, "image/png")},
        timeout=10,
    )
    assert r.status_code == 413


def test_upload_over_the_per_file_limit_is_400_naming_it(locked_url) -> None:
    r = requests.post(
        f"{locked_url}/v1/inpaint",
        data={"prompt": "x"},
        headers=auth(),
        files={"image": ("a.png", b"0" * 4500, "image/png")},
        timeout=10,
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "image"


def test_cors_is_off_unless_configured(server_url, small_pipeline) -> None:
    r = requests.get(f"{server_url}/v1/settings", headers={"Origin": "https://evil.example"}, timeout=10)
    assert "Access-Control-Allow-Origin" not in r.headers
    with running(
        create_app(ServiceConfig(cors_origins=("https://app.example",)), pipeline=small_pipeline)
    ) as url:
        ok = requests.get(f"{url}/v1/settings", headers={"Origin": "https://app.example"}, timeout=10)
        assert ok.headers["Access-Control-Allow-Origin"] == "https://app.example"
        other = requests.get(f"{url}/v1/settings", headers={"Origin": "https://evil.example"}, timeout=10)
        assert "Access-Control-Allow-Origin" not in other.headers


def test_logs_never_contain_the_key(locked_url, caplog) -> None:
    with caplog.at_level(logging.DEBUG):
        requests.post(
            f"{locked_url}/v1/generations",
            json={"prompt": "x", "size": 32, "steps": "2"},
            headers=auth(),
            timeout=60,
        )
        requests.get(f"{locked_url}/v1/settings", headers=auth("wrong-key-abc"), timeout=10)
    assert KEY not in caplog.text and "wrong-key-abc" not in caplog.text


def test_images_are_written_only_under_server_chosen_names(small_pipeline, tmp_path) -> None:
    config = ServiceConfig(image_dir=str(tmp_path / "images"))
    with running(create_app(config, pipeline=small_pipeline)) as url:
        job = requests.post(
            f"{url}/v1/generations", json={"prompt": "../../etc/passwd", "size": 32, "steps": "2"}, timeout=60
        ).json()
    files = list((tmp_path / "images").iterdir())
    assert len(files) == 1 and files[0].name.startswith(job["id"]) and files[0].suffix == ".png"


def test_offline_without_cached_models_stays_up_and_names_what_is_missing(tmp_path) -> None:
    config = ServiceConfig(
        offline=True, cache_dir=str(tmp_path), base_inpaint="none", upsample_inpaint="none"
    )
    app = create_app(config)
    with running(app) as url:
        service = app.extensions["glide_api"]
        service._loader.join(timeout=30)
        r = requests.get(f"{url}/readyz", timeout=10)
        assert r.status_code == 503
        body = r.json()
        assert (
            not body["ready"]
            and body["command"] == f"glide-api download base upsample --cache-dir {tmp_path}"
        )
        assert any(m.endswith("base.pt") for m in body["missing"])
        r = requests.post(f"{url}/v1/generations", json={"prompt": "x"}, timeout=10)
        assert r.status_code == 503 and "Retry-After" in r.headers
        assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
        assert requests.get(f"{url}/", timeout=10).status_code == 200


# ---- request bodies ----------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", None, "application/xml"])
def test_json_is_taken_only_as_application_json(server_url, content_type) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    r = requests.post(
        f"{server_url}/v1/generations", data=b'{"prompt": "x", "size": 32}', headers=headers, timeout=10
    )
    assert r.status_code == 415, r.text
    assert (
        r.json()["error"]["code"] == "unsupported_media_type"
        and "application/json" in r.json()["error"]["message"]
    )


def test_a_chunked_json_body_is_held_to_the_size_limit(server_url) -> None:
    def chunks():
        yield b'{"prompt": "'
        for _ in range(3 * 1024):  # 3 MiB, past max_body_bytes (1 MiB), with no Content-Length
            yield b"x" * 1024
        yield b'"}'

    r = requests.post(
        f"{server_url}/v1/generations",
        data=chunks(),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "payload_too_large"


def test_json_nested_past_what_the_parser_takes_is_400(server_url) -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    r = requests.post(
        f"{server_url}/v1/generations", data=body, headers={"Content-Type": "application/json"}, timeout=30
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "body"


def test_head_on_the_generating_route_never_generates(server_url) -> None:
    before = requests.get(f"{server_url}/v1/jobs", timeout=10).json()["jobs"]
    r = requests.head(f"{server_url}/image?size=32&prompt=x", timeout=10)
    assert r.status_code == 405 and r.headers["Allow"] == "GET"
    assert requests.get(f"{server_url}/v1/jobs", timeout=10).json()["jobs"] == before


def test_a_wrong_method_is_405_with_allow_in_the_json_error_shape(server_url) -> None:
    r = requests.delete(f"{server_url}/v1/generations", timeout=10)
    assert r.status_code == 405 and "POST" in r.headers["Allow"]
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json()["error"]["code"] == "method_not_allowed"


# ---- guessing keys --------------------------------------------------------------------------------


def test_guessing_keys_is_throttled_per_address_before_any_key_is_compared(small_pipeline) -> None:
    config = ServiceConfig(api_keys=(KEY,), auth_failures_per_minute=5)
    with running(create_app(config, pipeline=small_pipeline)) as url:
        answers = [
            requests.get(f"{url}/v1/jobs", headers=auth(f"guess-{i}"), timeout=10).status_code
            for i in range(8)
        ]
        assert answers == [401] * 5 + [429] * 3
        throttled = requests.get(f"{url}/v1/jobs", headers=auth(KEY), timeout=10)  # even the right key waits
        assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1
        assert throttled.json()["error"]["code"] == "rate_limit_exceeded"
        assert requests.get(f"{url}/healthz", timeout=10).status_code == 200  # public paths stay open


def test_the_per_client_table_stays_bounded_whatever_the_number_of_clients() -> None:
    from glide_api.server.auth import RateLimiter

    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0], max_clients=100)
    for i in range(10_000):
        now[0] += 0.001  # all recent: none has refilled, so the longest idle go first
        limiter.acquire(f"client-{i}")
    assert len(limiter) <= 100
    assert "client-9999" in limiter and "client-0" not in limiter
