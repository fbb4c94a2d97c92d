"""The APIs of a fleet: two API replicas over real HTTP and one worker on the small models, all on
a real redis-server. Whatever a client does on one replica, the other one sees."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import openai
import pytest
import requests
from conftest import running
from sse import read_events

from glide_api.config import ServiceConfig
from glide_api.engine.fleet import Fleet
from glide_api.server import create_app
from glide_api.server.service import engine_config

K1, K2 = {"Authorization": "Bearer k1"}, {"Authorization": "Bearer k2"}
FAST = {"size": 64, "steps": "3", "upsample_steps": "2"}
SLOW = {"size": 64, "steps": "400", "upsample_steps": "2"}
ASYNC = {"Prefer": "respond-async"}


@pytest.fixture(scope="module")
def replicas(module_redis, small_pipeline) -> Iterator[tuple[str, str]]:
    config = ServiceConfig(
        queue=module_redis.url, api_keys=("k1", "k2"), admin_keys=("admin",), max_steps=1000, data_dir="none"
    )
    worker = Fleet.worker(
        module_redis.url, small_pipeline, engine_config(config), worker_id="w-test", claim_timeout=5
    )
    worker.start()
    try:
        with running(create_app(config)) as a, running(create_app(config)) as b:
            deadline = time.monotonic() + 10
            while requests.get(f"{a}/readyz", timeout=5).status_code != 200:
                assert time.monotonic() < deadline, "the replica never saw the worker"
                time.sleep(0.1)
            yield a, b
    finally:
        worker.close()


def submit(url: str, body: dict, headers: dict | None = None) -> dict:
    answer = requests.post(
        f"{url}/v1/generations", json=body, headers={**K1, **ASYNC, **(headers or {})}, timeout=10
    )
    assert answer.status_code == 202, answer.text
    return answer.json()


def status(url: str, job_id: str, headers: dict = K1) -> dict:
    return requests.get(f"{url}/v1/jobs/{job_id}", headers=headers, timeout=10).json()


def until_status(url: str, job_id: str, wanted: set[str], within: float = 60) -> dict:
    deadline = time.monotonic() + within
    while (job := status(url, job_id))["status"] not in wanted:
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    return job


def test_a_synchronous_request_on_a_replica_answers_with_the_images_a_worker_made(replicas) -> None:
    a, _ = replicas
    answer = requests.post(f"{a}/v1/generations", json={"prompt": "sync", **FAST}, headers=K1, timeout=60)
    assert answer.status_code == 200, answer.text
    job = answer.json()
    assert job["status"] == "succeeded"
    png = requests.get(f"{a}{job['images'][0]['url']}", headers=K1, timeout=10)
    assert png.content.startswith(b"\x89PNG")


def test_an_idempotency_key_sent_to_two_replicas_gives_one_job(replicas) -> None:
    a, b = replicas
    body = {"prompt": "once only", "seed": 4, **FAST}
    first = submit(a, body, {"Idempotency-Key": "order-17"})
    second = requests.post(
        f"{b}/v1/generations", json=body, headers={**K1, **ASYNC, "Idempotency-Key": "order-17"}, timeout=10
    )
    assert second.json()["id"] == first["id"] and second.headers.get("Idempotent-Replayed") == "true"
    other = requests.post(
        f"{b}/v1/generations",
        json={**body, "seed": 5},
        headers={**K1, **ASYNC, "Idempotency-Key": "order-17"},
        timeout=10,
    )
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["error"]["message"]


def test_a_stream_resumed_on_the_other_replica_with_last_event_id_goes_on_where_it_stopped(replicas) -> None:
    a, b = replicas
    job = submit(a, {"prompt": "resumed", **FAST})
    with requests.get(f"{a}/v1/jobs/{job['id']}/events", headers=K1, stream=True, timeout=30) as first:
        lines = first.iter_lines(decode_unicode=True)
        ids = []
        for line in lines:
            if line.startswith("id:"):
                ids.append(int(line[3:]))
            if len(ids) == 3:
                break
    resumed = requests.get(
        f"{b}/v1/jobs/{job['id']}/events",
        headers={**K1, "Last-Event-ID": str(ids[-1])},
        stream=True,
        timeout=30,
    )
    events = list(read_events(resumed))
    assert events[0][1]["seq"] == ids[-1] + 1
    assert events[-1][0] == "succeeded" and events[-1][1]["job"]["id"] == job["id"]


def test_a_cancel_on_one_replica_stops_the_job_running_on_the_worker(replicas) -> None:
    a, b = replicas
    job = submit(a, {"prompt": "to cancel", **SLOW})
    until_status(a, job["id"], {"running"})
    deadline = time.monotonic() + 5
    while True:  # the worker tells the fleet at once; a replica's view is at most a second old
        workers = requests.get(f"{b}/v1/workers", headers=K1, timeout=10).json()
        assert workers["mode"] == "fleet"
        if [w["current_jobs"] for w in workers["workers"] if w["id"] == "w-test"] == [[job["id"]]]:
            break
        assert time.monotonic() < deadline, workers
        time.sleep(0.1)
    deadline = time.monotonic() + 30
    while not status(a, job["id"])["progress"]:  # under way: the cancel stops it mid-run
        assert time.monotonic() < deadline
        time.sleep(0.05)
    requests.post(f"{b}/v1/jobs/{job['id']}/cancel", headers=K1, timeout=10)
    done = until_status(a, job["id"], {"cancelled", "succeeded", "failed"}, within=10)
    assert done["status"] == "cancelled" and done["progress"]["total"] == 400
    assert done["progress"]["step"] < 400


def test_a_job_belongs_to_its_api_key_on_every_replica(replicas) -> None:
    a, b = replicas
    job = submit(a, {"prompt": "k1's own", **FAST})
    until_status(a, job["id"], {"succeeded"})
    assert requests.get(f"{b}/v1/jobs/{job['id']}", headers=K2, timeout=10).status_code == 404
    assert requests.get(f"{b}/v1/jobs/{job['id']}/images/0.png", headers=K2, timeout=10).status_code == 404
    assert job["id"] not in {
        j["id"] for j in requests.get(f"{b}/v1/jobs", headers=K2, timeout=10).json()["jobs"]
    }
    assert job["id"] in {j["id"] for j in requests.get(f"{b}/v1/jobs", headers=K1, timeout=10).json()["jobs"]}


def test_previews_reach_a_subscriber_on_another_replica(replicas) -> None:
    a, b = replicas
    job = submit(a, {"prompt": "previewed", "size": 64, "steps": "12", "upsample_steps": "2"})
    stream = requests.get(
        f"{b}/v1/jobs/{job['id']}/events", params={"previews": "true"}, headers=K1, stream=True, timeout=30
    )
    previews = [
        data["preview"] for name, data in read_events(stream) if name == "progress" and data.get("preview")
    ]
    assert previews and base64.b64decode(previews[0]).startswith(b"\x89PNG")


def test_the_official_openai_client_works_against_a_replica(replicas) -> None:
    _, b = replicas
    client = openai.OpenAI(base_url=f"{b}/v1", api_key="k2", max_retries=0, timeout=120)
    result = client.images.generate(
        prompt="a corgi",
        size="64x64",
        response_format="b64_json",
        extra_body={"steps": "3", "upsample_steps": "2"},
    )
    assert base64.b64decode(result.data[0].b64_json).startswith(b"\x89PNG")


def test_a_default_changed_on_one_replica_holds_on_every_replica(replicas) -> None:
    a, b = replicas
    admin = {"Authorization": "Bearer admin"}
    changed = requests.post(f"{a}/basemodel", params={"diffusion_steps": "5"}, headers=admin, timeout=10)
    assert changed.status_code == 200, changed.text
    try:
        job = submit(b, {"prompt": "default steps", "size": 64, "upsample_steps": "2"})
        assert job["request"]["settings"]["base_respacing"] == "5"
    finally:
        requests.post(f"{a}/basemodel", params={"diffusion_steps": "100"}, headers=admin, timeout=10)
