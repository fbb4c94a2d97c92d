"""Idempotent submits over real HTTP with the small models: an `Idempotency-Key` gets one job per
caller and request, on every submitting route; and the record stores behind it, in memory and in
SQLite, with a fake clock."""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from PIL import Image

from glide_api.engine.idempotency_keys import MemoryIdempotencyKeys, SqliteIdempotencyKeys

ALICE, BOB = "alice-key", "bob-key"
QUICK = {"size": 32, "steps": "2"}
ASYNC = {"Prefer": "respond-async"}


def as_user(key: str, idempotency_key: str | None = None, **headers: str) -> dict[str, str]:
    with_key = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}
    return {"Authorization": f"Bearer {key}", **with_key, **headers}


def new_key() -> str:
    return f"key-{uuid.uuid4()}"


def jobs_with(url: str, prompt: str, user: str = ALICE) -> list[dict]:
    jobs = requests.get(f"{url}/v1/jobs", headers=as_user(user), timeout=10).json()["jobs"]
    return [job for job in jobs if job["request"]["prompt"] == prompt]


def png(color: tuple[int, int, int]) -> bytes:
    """An image whose transparent top half is the area to paint."""
    image = Image.new("RGBA", (32, 32), (*color, 255))
    image.paste((0, 0, 0, 0), (0, 0, 32, 16))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def serve(small_pipeline, **settings):
    """The app with two users' keys and quick jobs, in memory unless `settings` say otherwise, over
    HTTP."""
    from conftest import running

    from glide_api.config import ServiceConfig
    from glide_api.server import create_app

    # base_steps: the original route takes no steps of its own.
    defaults = {"data_dir": "none", "api_keys": (ALICE, BOB), "max_queue": 8, "base_steps": "2"}
    config = ServiceConfig(**(defaults | settings))
    return running(create_app(config, pipeline=small_pipeline))


@pytest.fixture(scope="module")
def url(small_pipeline) -> Iterator[str]:
    with serve(small_pipeline) as base:
        yield base


# ---- over HTTP -----------------------------------------------------------------------------------


def test_the_same_key_and_body_twice_give_one_job_and_the_second_answer_says_replayed(url) -> None:
    key, body = new_key(), {"prompt": f"once {uuid.uuid4()}", **QUICK}
    first = requests.post(
        f"{url}/v1/generations", json=body, headers=as_user(ALICE, key, **ASYNC), timeout=30
    )
    again = requests.post(
        f"{url}/v1/generations", json=body, headers=as_user(ALICE, key, **ASYNC), timeout=30
    )
    assert first.status_code == again.status_code == 202, again.text
    assert again.json()["id"] == first.json()["id"] and again.headers["Location"] == first.headers["Location"]
    assert "Idempotent-Replayed" not in first.headers and again.headers["Idempotent-Replayed"] == "true"
    assert len(jobs_with(url, body["prompt"])) == 1


def test_a_synchronous_replay_answers_the_finished_job_as_the_first_request_was(url) -> None:
    key, body = new_key(), {"prompt": f"sync {uuid.uuid4()}", **QUICK}
    first = requests.post(f"{url}/v1/generations", json=body, headers=as_user(ALICE, key), timeout=60)
    # The same job though it is sent asynchronously now: Prefer changes the answer, not the job.
    queued = requests.post(
        f"{url}/v1/generations", json=body, headers=as_user(ALICE, key, **ASYNC), timeout=30
    )
    again = requests.post(f"{url}/v1/generations", json=body, headers=as_user(ALICE, key), timeout=60)
    assert first.status_code == again.status_code == 200 and queued.status_code == 202, again.text
    assert again.json() == first.json() and queued.json()["id"] == first.json()["id"]
    assert first.json()["status"] == "succeeded" and again.headers["Idempotent-Replayed"] == "true"


def test_the_same_key_with_another_body_or_route_is_a_422_naming_the_header(url) -> None:
    key, body = new_key(), {"prompt": f"first {uuid.uuid4()}", **QUICK}
    assert requests.post(
        f"{url}/v1/generations", json=body, headers=as_user(ALICE, key, **ASYNC), timeout=30
    ).ok
    other_body = requests.post(
        f"{url}/v1/generations", json=body | {"seed": 7}, headers=as_user(ALICE, key, **ASYNC), timeout=30
    )
    other_route = requests.post(
        f"{url}/v1/images/generations",
        json={"prompt": body["prompt"]},
        headers=as_user(ALICE, key),
        timeout=30,
    )
    for refused in (other_body, other_route):
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["param"] == "Idempotency-Key" and error["code"] == "idempotency_key_reused"
        assert error["message"].startswith("Idempotency-Key: ") and "another request" in error["message"]
    assert len(jobs_with(url, body["prompt"])) == 1


def test_a_json_body_is_the_same_request_whatever_the_order_of_its_keys(url) -> None:
    key, prompt = new_key(), f"order {uuid.uuid4()}"
    texts = [
        f'{{"prompt": "{prompt}", "size": 32, "steps": "2"}}',
        f'{{"steps":"2","size":32,"prompt":"{prompt}"}}',
    ]
    headers = as_user(ALICE, key, **ASYNC) | {"Content-Type": "application/json"}
    answers = [
        requests.post(f"{url}/v1/generations", data=text, headers=headers, timeout=30) for text in texts
    ]
    assert [a.status_code for a in answers] == [202, 202] and answers[0].json()["id"] == answers[1].json()[
        "id"
    ]


def test_concurrent_requests_with_one_key_make_exactly_one_job(url) -> None:
    key, body = new_key(), {"prompt": f"race {uuid.uuid4()}", **QUICK}
    start = threading.Barrier(8)

    def send(_: int) -> requests.Response:
        start.wait()
        return requests.post(
            f"{url}/v1/generations", json=body, headers=as_user(ALICE, key, **ASYNC), timeout=30
        )

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(8)))
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["id"] for a in answers}) == 1
    assert sum("Idempotent-Replayed" not in a.headers for a in answers) == 1
    assert len(jobs_with(url, body["prompt"])) == 1


def test_two_api_keys_with_the_same_idempotency_key_get_their_own_jobs(url) -> None:
    key, prompt = new_key(), f"users {uuid.uuid4()}"
    alice = requests.post(
        f"{url}/v1/generations",
        json={"prompt": prompt, **QUICK},
        headers=as_user(ALICE, key, **ASYNC),
        timeout=30,
    )
    bob = requests.post(
        f"{url}/v1/generations",
        json={"prompt": prompt, **QUICK, "seed": 3},  # another body: no 422, the key is Bob's own
        headers=as_user(BOB, key, **ASYNC),
        timeout=30,
    )
    assert alice.status_code == bob.status_code == 202, bob.text
    assert alice.json()["id"] != bob.json()["id"] and "Idempotent-Replayed" not in bob.headers
    assert len(jobs_with(url, prompt, ALICE)) == len(jobs_with(url, prompt, BOB)) == 1


@pytest.mark.parametrize(
    "value",
    ["", "x" * 256, "clé".encode("latin-1"), "a\tb"],
    ids=["empty", "256", "latin1", "tab"],
)
def test_a_malformed_key_is_a_400_naming_the_header_and_its_rule(url, value) -> None:
    prompt = f"bad key {uuid.uuid4()}"
    r = requests.post(
        f"{url}/v1/generations",
        json={"prompt": prompt, **QUICK},
        headers=as_user(ALICE) | {"Idempotency-Key": value},
        timeout=30,
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "Idempotency-Key" and "1 to 255 printable ASCII characters" in error["message"]
    assert jobs_with(url, prompt) == []


def test_openai_generations_streamed_or_not_and_the_original_route_replay_their_job(url) -> None:
    prompt = f"openai {uuid.uuid4()}"
    for body in (
        {"prompt": prompt, **QUICK, "size": "32x32"},
        {"prompt": prompt, **QUICK, "size": "32x32", "stream": True},
    ):
        key = new_key()
        answers = [
            requests.post(f"{url}/v1/images/generations", json=body, headers=as_user(ALICE, key), timeout=60)
            for _ in range(2)
        ]
        assert [a.status_code for a in answers] == [200, 200] and answers[0].content == answers[1].content
        assert answers[1].headers["Idempotent-Replayed"] == "true"
    assert len(jobs_with(url, prompt)) == 2  # one per key
    key, query = new_key(), {"prompt": f"legacy {uuid.uuid4()}", "size": 32}
    legacy = [
        requests.get(f"{url}/image", params=query, headers=as_user(ALICE, key), timeout=60) for _ in range(2)
    ]
    assert [a.status_code for a in legacy] == [200, 200]
    assert (
        legacy[0].json()["job_id"] == legacy[1].json()["job_id"] and legacy[1].headers["Idempotent-Replayed"]
    )


def test_an_upload_is_part_of_the_request_so_another_image_with_the_key_is_a_422(url) -> None:
    key, form = new_key(), {"prompt": f"edit {uuid.uuid4()}", "size": "32x32", "steps": "2"}

    def edit(color: tuple[int, int, int]) -> requests.Response:
        files = {"image": ("in.png", png(color), "image/png")}
        return requests.post(
            f"{url}/v1/images/edits", data=form, files=files, headers=as_user(ALICE, key), timeout=60
        )

    first, again, other = edit((200, 10, 10)), edit((200, 10, 10)), edit((10, 10, 200))
    assert first.status_code == again.status_code == 200 and again.content == first.content, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 422 and other.json()["error"]["param"] == "Idempotency-Key"
    inpaint = {"image": ("in.png", png((1, 2, 3)), "image/png")}
    v1 = [
        requests.post(
            f"{url}/v1/inpaint",
            data=form | {"size": "32"},
            files=inpaint,
            headers=as_user(ALICE, key + "-v1", **ASYNC),
            timeout=30,
        )
        for _ in range(2)
    ]
    assert [a.status_code for a in v1] == [202, 202] and v1[0].json()["id"] == v1[1].json()["id"]
    assert len(jobs_with(url, form["prompt"])) == 2  # the edit and the v1 inpainting


def test_a_key_whose_job_is_no_longer_kept_is_a_422_naming_that_job(small_pipeline) -> None:
    with serve(small_pipeline, keep_finished=1) as base:
        key, body = new_key(), {"prompt": "evicted", **QUICK}
        first = requests.post(
            f"{base}/v1/generations", json=body, headers=as_user(ALICE, key), timeout=60
        ).json()
        requests.post(
            f"{base}/v1/generations", json={"prompt": "newer", **QUICK}, headers=as_user(ALICE), timeout=60
        )
        gone = requests.post(f"{base}/v1/generations", json=body, headers=as_user(ALICE, key), timeout=60)
    assert gone.status_code == 422, gone.text
    error = gone.json()["error"]
    assert (
        error["param"] == "Idempotency-Key"
        and error["job_id"] == first["id"]
        and "no longer kept" in error["message"]
    )


def test_a_failed_submit_frees_its_key_for_the_retry(small_pipeline) -> None:
    with serve(small_pipeline, max_queue=1) as base:
        long = {"prompt": "long", "size": 64, "steps": "200", "upsample_steps": "50"}
        running = requests.post(
            f"{base}/v1/generations", json=long, headers=as_user(ALICE, **ASYNC), timeout=30
        ).json()
        deadline = time.monotonic() + 30
        while (
            requests.get(f"{base}/v1/jobs/{running['id']}", headers=as_user(ALICE), timeout=10).json()[
                "status"
            ]
            != "running"
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        waiting = requests.post(
            f"{base}/v1/generations", json=long, headers=as_user(ALICE, **ASYNC), timeout=30
        ).json()
        key, body = new_key(), {"prompt": "retried", **QUICK}
        refused = requests.post(
            f"{base}/v1/generations", json=body, headers=as_user(ALICE, key, **ASYNC), timeout=30
        )
        assert refused.status_code == 429, refused.text
        for job in (running, waiting):
            requests.post(f"{base}/v1/jobs/{job['id']}/cancel", headers=as_user(ALICE), timeout=10)
        retried = requests.post(
            f"{base}/v1/generations", json=body, headers=as_user(ALICE, key, **ASYNC), timeout=30
        )
        assert retried.status_code == 202 and "Idempotent-Replayed" not in retried.headers, retried.text
        # At once: not after the refused request's hold on the key (CLAIM_SECONDS) lapsed.
        assert retried.elapsed.total_seconds() < 2
        assert len(jobs_with(base, "retried")) == 1


def test_a_key_outlives_a_restart_with_a_data_dir(small_pipeline, tmp_path) -> None:
    key, body = new_key(), {"prompt": "kept", **QUICK}
    with serve(small_pipeline, data_dir=str(tmp_path)) as base:
        first = requests.post(f"{base}/v1/generations", json=body, headers=as_user(ALICE, key), timeout=60)
    assert (tmp_path / "idempotency.sqlite3").is_file()
    with serve(small_pipeline, data_dir=str(tmp_path)) as base:
        again = requests.post(f"{base}/v1/generations", json=body, headers=as_user(ALICE, key), timeout=60)
        other = requests.post(
            f"{base}/v1/generations", json=body | {"n": 2}, headers=as_user(ALICE, key), timeout=60
        )
    assert first.status_code == again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true" and other.status_code == 422


def test_a_key_expires_after_idempotency_ttl(small_pipeline) -> None:
    with serve(small_pipeline, idempotency_ttl=0.5) as base:
        key, body = new_key(), {"prompt": "expiring", **QUICK}
        first = requests.post(
            f"{base}/v1/generations", json=body, headers=as_user(ALICE, key, **ASYNC), timeout=30
        )
        time.sleep(0.6)
        again = requests.post(
            f"{base}/v1/generations", json=body, headers=as_user(ALICE, key, **ASYNC), timeout=30
        )
        other = requests.post(
            f"{base}/v1/generations",
            json=body | {"seed": 1},
            headers=as_user(ALICE, key, **ASYNC),
            timeout=30,
        )
    assert first.status_code == again.status_code == 202 and again.json()["id"] != first.json()["id"]
    assert "Idempotent-Replayed" not in again.headers
    assert other.status_code == 422  # the key is held again, by the second request


# ---- the record stores ---------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "sqlite"])
def make_keys(request, tmp_path):
    """Build a store of the parametrised kind; a second call on SQLite reopens the same file."""
    opened = []

    def make(*, clock: Clock, ttl: float = 100.0, max_keys: int = 1000, claim_seconds: float = 10.0):
        bounds = {"ttl": ttl, "max_keys": max_keys, "claim_seconds": claim_seconds, "clock": clock}
        if request.param == "memory":
            keys = MemoryIdempotencyKeys(**bounds)
        else:
            keys = SqliteIdempotencyKeys(tmp_path / "idempotency.sqlite3", **bounds)
        opened.append(keys)
        return keys

    yield make
    for keys in opened:
        keys.close()


def test_a_store_claims_binds_replays_and_refuses_another_fingerprint(make_keys) -> None:
    keys = make_keys(clock=Clock())
    claim = keys.claim(scope="alice", key="k", fingerprint="f1")
    assert claim.state == "new" and claim.token
    assert keys.claim(scope="alice", key="k", fingerprint="f1").state == "pending"
    assert keys.claim(scope="alice", key="k", fingerprint="f2").state == "mismatch"
    keys.bind(claim, "job-1")
    replay = keys.claim(scope="alice", key="k", fingerprint="f1")
    assert (replay.state, replay.job_id) == ("replay", "job-1")
    assert keys.claim(scope="alice", key="k", fingerprint="f2").state == "mismatch"
    assert keys.claim(scope="bob", key="k", fingerprint="f2").state == "new"


def test_a_released_claim_frees_the_key_and_a_bound_one_cannot_be_released(make_keys) -> None:
    keys = make_keys(clock=Clock())
    failed = keys.claim(scope="", key="k", fingerprint="f")
    keys.release(failed)
    retry = keys.claim(scope="", key="k", fingerprint="other")
    assert retry.state == "new"
    keys.bind(retry, "job-2")
    keys.release(retry)
    assert keys.claim(scope="", key="k", fingerprint="other").job_id == "job-2"


def test_a_hold_never_bound_lapses_and_its_stale_claim_cannot_overwrite_the_next(make_keys) -> None:
    clock = Clock()
    keys = make_keys(clock=clock, claim_seconds=5.0)
    stale = keys.claim(scope="", key="k", fingerprint="f")
    clock.now += 5.0
    fresh = keys.claim(scope="", key="k", fingerprint="f")
    assert fresh.state == "new"
    keys.bind(fresh, "job-fresh")
    keys.bind(stale, "job-stale")
    keys.release(stale)
    assert keys.claim(scope="", key="k", fingerprint="f").job_id == "job-fresh"


def test_a_bound_key_expires_after_its_ttl(make_keys) -> None:
    clock = Clock()
    keys = make_keys(clock=clock, ttl=60.0)
    keys.bind(keys.claim(scope="", key="k", fingerprint="f"), "job-1")
    clock.now += 59.0
    assert keys.claim(scope="", key="k", fingerprint="f").state == "replay"
    clock.now += 1.0
    assert keys.claim(scope="", key="k", fingerprint="another").state == "new"


def test_past_max_keys_the_oldest_claims_are_forgotten(make_keys) -> None:
    keys = make_keys(clock=Clock(), max_keys=3)
    for i in range(4):
        keys.bind(keys.claim(scope="", key=f"k{i}", fingerprint="f"), f"job-{i}")
    assert keys.claim(scope="", key="k0", fingerprint="other").state == "new"
    assert [keys.claim(scope="", key=f"k{i}", fingerprint="f").job_id for i in (2, 3)] == ["job-2", "job-3"]


def test_of_many_threads_claiming_one_key_exactly_one_gets_it(make_keys) -> None:
    keys = make_keys(clock=Clock())
    start = threading.Barrier(16)

    def claim(_: int) -> str:
        start.wait()
        return keys.claim(scope="", key="k", fingerprint="f").state

    with ThreadPoolExecutor(16) as pool:
        states = list(pool.map(claim, range(16)))
    assert states.count("new") == 1 and states.count("pending") == 15


def test_the_sqlite_store_keeps_its_records_when_reopened(tmp_path) -> None:
    clock = Clock()
    path = tmp_path / "idempotency.sqlite3"
    first = SqliteIdempotencyKeys(path, ttl=100.0, max_keys=10, clock=clock)
    first.bind(first.claim(scope="", key="k", fingerprint="f"), "job-1")
    first.close()
    reopened = SqliteIdempotencyKeys(path, ttl=100.0, max_keys=10, clock=clock)
    try:
        assert reopened.claim(scope="", key="k", fingerprint="f").job_id == "job-1"
    finally:
        reopened.close()


def test_the_redis_store_claims_binds_replays_releases_and_lets_a_lapsed_hold_go(redis_server) -> None:
    from glide_api.engine.redis_idempotency import RedisIdempotencyKeys
    from glide_api.engine.redis_store import RedisLink

    link = RedisLink(redis_server.url)
    keys, other_replica = (RedisIdempotencyKeys(link, ttl=60.0, claim_seconds=0.3) for _ in range(2))
    claim = keys.claim(scope="alice", key="k", fingerprint="f1")
    assert claim.state == "new"
    assert other_replica.claim(scope="alice", key="k", fingerprint="f1").state == "pending"
    assert other_replica.claim(scope="alice", key="k", fingerprint="f2").state == "mismatch"
    keys.bind(claim, "job-1")
    replay = other_replica.claim(scope="alice", key="k", fingerprint="f1")
    assert (replay.state, replay.job_id) == ("replay", "job-1")
    assert other_replica.claim(scope="bob", key="k", fingerprint="f1").state == "new"
    keys.release(claim)  # bound: stays
    assert keys.claim(scope="alice", key="k", fingerprint="f1").job_id == "job-1"

    failed = keys.claim(scope="", key="retry", fingerprint="f")
    keys.release(failed)
    assert other_replica.claim(scope="", key="retry", fingerprint="g").state == "new"

    stale = keys.claim(scope="", key="lapse", fingerprint="f")
    time.sleep(0.4)
    fresh = other_replica.claim(scope="", key="lapse", fingerprint="f")
    assert fresh.state == "new"
    other_replica.bind(fresh, "job-fresh")
    keys.bind(stale, "job-stale")
    keys.release(stale)
    assert keys.claim(scope="", key="lapse", fingerprint="f").job_id == "job-fresh"

    start = threading.Barrier(16)

    def race(_: int) -> str:
        start.wait()
        return keys.claim(scope="", key="race", fingerprint="f").state

    with ThreadPoolExecutor(16) as pool:
        states = list(pool.map(race, range(16)))
    assert states.count("new") == 1 and states.count("pending") == 15
    link.close()
