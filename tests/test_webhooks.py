"""Webhooks over real HTTP both ways: the small-model server posts to a receiver in this test, which
checks each signature with its own reading of the Standard Webhooks rules (and with the
`standardwebhooks` package), answers as each test scripts it, and records what came."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import ipaddress
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from conftest import running
from PIL import Image
from standardwebhooks.webhooks import Webhook

from glide_api.config import ServiceConfig
from glide_api.engine.jobs import TERMINAL
from glide_api.errors import InvalidParameter
from glide_api.pipeline.images import encode_png
from glide_api.server import create_app
from glide_api.webhooks import (
    Attempt,
    Delivery,
    MemoryOutbox,
    Outbox,
    RedisOutbox,
    SqliteOutbox,
    Subscription,
    WebhookSecret,
    refusal,
)

SECRET = "whsec_" + base64.b64encode(b"glide-api webhook test key, 32b").decode()
FAST = {"prompt": "a red cube", "size": 32, "steps": "2", "upsample_steps": "2"}
ASYNC = {"Prefer": "respond-async"}
PUBLIC = "https://glide.example.com"


def verify(secret: str, headers: dict[str, str], body: bytes, *, tolerance: float = 300) -> bool:
    """The receiver's check, written from the specification: some `v1,` signature in the
    space-separated list equals base64(HMAC-SHA256(key, "id.timestamp.body")), and the timestamp is
    recent."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id, stamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(stamp)) > tolerance:
        return False
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest())
    for signature in headers["webhook-signature"].split(" "):
        version, _, value = signature.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            return True
    return False


class Receiver:
    """A webhook receiver on 127.0.0.1: `script[path]` lists the statuses to answer in turn (the
    last repeats; 302 redirects to /ok, 429 says Retry-After: 2, "slow" answers after 3 s); `got`
    records every request."""

    def __init__(self) -> None:
        self.script: dict[str, list[int | str]] = {}
        self.got: list[tuple[str, dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.got.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    plan = receiver.script.setdefault(self.path, [200])
                    answer = plan.pop(0) if len(plan) > 1 else plan[0]
                if answer == "slow":
                    time.sleep(3)
                    answer = 200
                try:
                    self.send_response(int(answer))
                    if answer == 302:
                        self.send_header("Location", "/ok")
                    if answer == 429:
                        self.send_header("Retry-After", "2")
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"no")
                except OSError:  # the sender gave up waiting (the timeout test)
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def requests(self, path: str, count: int, timeout: float = 10) -> list[tuple[dict[str, str], bytes]]:
        """The first `count` requests to `path`, waiting up to `timeout` seconds for them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                hits = [(h, b) for p, h, b in self.got if p == path]
            if len(hits) >= count:
                return hits
            time.sleep(0.02)
        raise AssertionError(f"{path}: {len(hits)} of {count} requests came within {timeout} s")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture(scope="module")
def hooks_url(small_pipeline) -> Iterator[str]:
    config = ServiceConfig(
        data_dir="none",
        max_queue=8,
        webhook_secret=SECRET,
        webhook_allow_hosts=("127.0.0.1",),
        webhook_backoff=0.05,
        webhook_attempts=2,
        webhook_timeout=1.0,
        public_url=PUBLIC + "/",
    )
    with running(create_app(config, pipeline=small_pipeline)) as url:
        yield url


def submit(base: str, webhook: str, **fields: object) -> dict:
    r = requests.post(f"{base}/v1/generations", json={**FAST, "webhook": webhook, **fields}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def deliveries(base: str, job_id: str, count: int, timeout: float = 10) -> list[dict]:
    """The job's delivery attempts once `count` of them are recorded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = requests.get(f"{base}/v1/jobs/{job_id}", timeout=10).json()["webhook"]["deliveries"]
        if len(shown) >= count:
            return shown
        time.sleep(0.02)
    raise AssertionError(f"job {job_id}: {shown}")


def test_a_finished_job_posts_one_signed_completed_event_with_the_job(hooks_url, receiver) -> None:
    job = submit(hooks_url, f"{receiver.url}/done")
    [(headers, body)] = receiver.requests("/done", 1)
    assert verify(SECRET, headers, body)
    Webhook(SECRET).verify(body, headers)  # the reference implementation agrees
    assert headers["webhook-id"].startswith("msg_") and headers["content-type"] == "application/json"
    payload = json.loads(body)
    assert payload["type"] == "job.succeeded" and payload["timestamp"].endswith("Z")
    assert payload["data"]["id"] == job["id"] and payload["data"]["status"] == "succeeded"
    assert payload["data"]["images"][0]["url"] == f"{PUBLIC}/v1/jobs/{job['id']}/images/0.png"
    [attempt] = deliveries(hooks_url, job["id"], 1)
    assert attempt["outcome"] == "delivered" and attempt["status"] == 200 and attempt["attempt"] == 1
    assert attempt["id"] == headers["webhook-id"] and attempt["event"] == "job.succeeded"
    shown = requests.get(f"{hooks_url}/v1/jobs/{job['id']}", timeout=10).json()["webhook"]
    assert shown["url"] == f"{receiver.url}/done" and shown["events"] == ["completed"]
    time.sleep(0.2)
    assert len(receiver.requests("/done", 1)) == 1  # once: a completed job sends nothing more


def test_all_events_send_each_status_once_in_order(hooks_url, receiver) -> None:
    r = requests.post(
        f"{hooks_url}/v1/generations",
        json={**FAST, "webhook": f"{receiver.url}/all", "webhook_events": ["all"]},
        headers=ASYNC,
        timeout=30,
    )
    assert r.status_code == 202, r.text
    got = receiver.requests("/all", 3)
    assert [json.loads(body)["type"] for _, body in got] == ["job.queued", "job.running", "job.succeeded"]
    assert len({headers["webhook-id"] for headers, _ in got}) == 3
    assert all(verify(SECRET, headers, body) for headers, body in got)


def test_a_failed_attempt_is_retried_with_the_same_id_and_a_fresh_signature(hooks_url, receiver) -> None:
    receiver.script["/flaky"] = [500, 200]
    job = submit(hooks_url, f"{receiver.url}/flaky")
    (first, body1), (second, body2) = receiver.requests("/flaky", 2)
    assert first["webhook-id"] == second["webhook-id"] and body1 == body2
    assert verify(SECRET, first, body1) and verify(SECRET, second, body2)
    tried, delivered = deliveries(hooks_url, job["id"], 2)
    assert (tried["status"], tried["outcome"], tried["attempt"]) == (500, "retrying", 1)
    assert "HTTP 500" in tried["error"] and tried["next_attempt_at"] >= tried["at"] + 0.05
    assert (delivered["status"], delivered["outcome"], delivered["attempt"]) == (200, "delivered", 2)


def test_a_redirect_is_not_followed(hooks_url, receiver) -> None:
    receiver.script["/moved"] = [302]
    job = submit(hooks_url, f"{receiver.url}/moved")
    tried, last = deliveries(hooks_url, job["id"], 2)
    assert tried["status"] == 302 and "redirects are not followed" in tried["error"]
    assert last["outcome"] == "failed"  # webhook_attempts=2: given up
    assert len(receiver.requests("/moved", 2)) == 2
    assert not [p for p, _, _ in receiver.got if p == "/ok"]


def test_an_attempt_past_the_timeout_fails(hooks_url, receiver) -> None:
    receiver.script["/slow"] = ["slow"]
    job = submit(hooks_url, f"{receiver.url}/slow")
    began = time.monotonic()
    first, _ = deliveries(hooks_url, job["id"], 2)
    assert first["status"] is None and "timed out after 1 s" in first["error"]
    assert time.monotonic() - began < 2.9  # two attempts of at most 1 s each, not the receiver's 3 s


def test_a_name_resolving_to_loopback_is_refused_at_delivery(hooks_url, receiver) -> None:
    # "127.1" is not an IP literal but resolves to 127.0.0.1: only the check at delivery sees it.
    port = receiver.url.rsplit(":", 1)[1]
    job = submit(hooks_url, f"http://127.1:{port}/sneaky")
    [attempt] = deliveries(hooks_url, job["id"], 1)
    assert attempt["outcome"] == "failed" and "127.0.0.1 is a loopback address" in attempt["error"]
    assert not [p for p, _, _ in receiver.got if p == "/sneaky"]


@pytest.mark.parametrize(
    ("webhook", "events", "param", "words"),
    [
        ("ftp://example.com/x", None, "webhook", "http:// or https://"),
        ("not a url", None, "webhook", "without spaces"),
        ("http:///path", None, "webhook", "no host"),
        ("https://user:pw@example.com/", None, "webhook", "user name or password"),
        ("http://10.0.0.7/hook", None, "webhook", "private address"),
        ("http://[::ffff:127.0.0.1]:9/", None, "webhook", "loopback"),
        ("http://169.254.169.254/latest", None, "webhook", "link-local"),
        ("http://localhost:9/", None, "webhook", "loopback name"),
        ("https://example.com/", ["finished"], "webhook_events.0", "'completed', 'all'"),
        (None, ["all"], "webhook_events", "only with a webhook"),
    ],
)
def test_a_bad_webhook_is_400_naming_the_field(hooks_url, webhook, events, param, words) -> None:
    body = {**FAST, "webhook": webhook} | ({"webhook_events": events} if events else {})
    r = requests.post(f"{hooks_url}/v1/generations", json=body, timeout=30)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and words in error["message"], error


def test_without_a_secret_a_webhook_is_refused(server_url) -> None:
    r = requests.post(
        f"{server_url}/v1/generations", json={**FAST, "webhook": "https://example.com/hook"}, timeout=30
    )
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "webhook" and "webhook_secret" in r.json()["error"]["message"]


def test_a_loopback_target_is_refused_unless_its_host_is_allowed(small_pipeline, receiver) -> None:
    config = ServiceConfig(webhook_secret=SECRET, max_queue=2)
    with running(create_app(config, pipeline=small_pipeline)) as url:
        r = requests.post(f"{url}/v1/generations", json={**FAST, "webhook": f"{receiver.url}/x"}, timeout=30)
    assert r.status_code == 400 and "webhook_allow_hosts" in r.json()["error"]["message"]


def test_inpaint_takes_a_webhook_as_form_fields(hooks_url, receiver) -> None:
    image = encode_png(Image.new("RGBA", (32, 32), (0, 0, 255, 0)))  # transparent: all to paint
    r = requests.post(
        f"{hooks_url}/v1/inpaint",
        data={**FAST, "webhook": f"{receiver.url}/inpaint", "webhook_events": "running, completed"},
        files={"image": ("in.png", image, "image/png")},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    got = receiver.requests("/inpaint", 2)
    assert [json.loads(body)["type"] for _, body in got] == ["job.running", "job.succeeded"]


@pytest.mark.parametrize(
    "address",
    [
        "10.1.2.3", "172.16.0.1", "192.168.1.1", "127.0.0.1", "169.254.169.254", "0.0.0.0",
        "100.64.0.1", "224.0.0.1", "255.255.255.255", "::1", "::", "fe80::1", "fc00::1", "ff02::1",
        "::ffff:10.0.0.1", "::ffff:127.0.0.1", "2002:a00:1::",
    ],
)  # fmt: skip
def test_non_public_addresses_are_refused(address) -> None:
    assert refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("secret", "whsec_"),
        ("whsec_!!!", "not base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "24 to 64 bytes"),
    ],
)
def test_a_bad_webhook_secret_stops_the_server_at_start(text, words) -> None:
    with pytest.raises(InvalidParameter, match=words) as caught:
        WebhookSecret.parse(text)
    assert caught.value.param == "webhook_secret"
    with pytest.raises(InvalidParameter, match=words):
        create_app(ServiceConfig(webhook_secret=text))


def test_the_secret_is_not_shown_in_the_public_settings() -> None:
    config = ServiceConfig(webhook_secret=SECRET)
    assert SECRET not in repr(config) and config.public_dict()["webhook_secret"] == "configured"


def test_a_full_outbox_refuses_new_webhooks_with_503_until_it_drains(receiver) -> None:
    from glide_api.errors import ServerBusy
    from glide_api.server.job_webhooks import JobWebhooks

    config = ServiceConfig(
        webhook_secret=SECRET, webhook_allow_hosts=("127.0.0.1",), webhook_max_pending=1, webhook_backoff=60
    )
    outbox = MemoryOutbox(keep=8)
    hooks = JobWebhooks(config, outbox=outbox)
    try:
        receiver.script["/full"] = [500]
        subscription = hooks.subscription(f"{receiver.url}/full", None)
        outbox.subscribe("job1", subscription)
        outbox.enqueue(
            Delivery("msg_1", "job1", "succeeded", "job.succeeded", subscription.url, b"{}", due=0)
        )
        with pytest.raises(ServerBusy, match="webhook_max_pending"):
            hooks.subscription(f"{receiver.url}/full", None)  # held, then waiting 60 s to be retried
    finally:
        hooks.close()


ALL = Subscription("https://example.com/", frozenset({"queued", "running", "succeeded"}), ("all",))


@pytest.fixture(params=["memory", "sqlite", "redis"])
def outbox(request, tmp_path) -> Iterator[Outbox]:
    """Each outbox behaviour holds for all three: in memory, in a data dir and on a fleet's Redis."""
    if request.param == "memory":
        box: Outbox = MemoryOutbox(keep=2)
    elif request.param == "sqlite":
        box = SqliteOutbox(tmp_path, keep=2)
    else:
        box = RedisOutbox(request.getfixturevalue("redis_server").url, keep=2, lease=30, retention=60)
    yield box
    box.close()


def make(n: int, status: str, job_id: str = "j") -> Delivery:
    return Delivery(f"msg_{n}", job_id, status, f"job.{status}", ALL.url, b"\x00{%d}" % n, due=0)


def attempt(delivery: Delivery, outcome: str, next_at: float | None = None) -> Attempt:
    return Attempt(delivery.id, delivery.event, delivery.attempts + 1, 1, 500, "HTTP 500", outcome, next_at)


def test_the_outbox_sends_a_jobs_deliveries_one_at_a_time_and_each_status_once(outbox) -> None:
    outbox.subscribe("j", ALL)
    assert outbox.enqueue(make(1, "queued")) and outbox.enqueue(make(2, "running"))
    assert not outbox.enqueue(make(3, "queued"))  # told twice: one delivery
    assert outbox.wants("j", "queued") is None and outbox.wants("j", "failed") is None
    assert outbox.wants("j", "succeeded") == ALL
    first = outbox.take(now=1)
    assert first == make(1, "queued") and outbox.take(now=1) is None  # the job's next waits for it
    outbox.record(first, attempt(first, "retrying", next_at=9))
    second = outbox.take(now=1)
    assert second.id == "msg_2"  # a retry does not hold up the later one
    assert outbox.pending() == 2 and outbox.next_due() is None  # msg_1 waits behind the held msg_2
    outbox.record(second, attempt(second, "delivered"))
    assert outbox.next_due() == 9 and outbox.take(now=8) is None
    retry = outbox.take(now=9)
    assert (retry.id, retry.body, retry.attempts) == ("msg_1", first.body, 1)
    assert [a["outcome"] for a in outbox.describe("j")["deliveries"]] == ["retrying", "delivered"]
    assert outbox.describe("j")["events"] == ["all"] and outbox.describe("other") is None


def test_a_gone_answer_ends_the_subscription_and_drops_the_jobs_later_deliveries(outbox) -> None:
    outbox.subscribe("j", ALL)
    outbox.enqueue(make(1, "queued"))
    outbox.enqueue(make(2, "running"))
    first = outbox.take(now=1)
    outbox.record(first, attempt(first, "gone"))
    assert outbox.take(now=1) is None and outbox.pending() == 0
    assert outbox.wants("j", "succeeded") is None and not outbox.enqueue(make(3, "succeeded"))
    assert [a["outcome"] for a in outbox.describe("j")["deliveries"]] == ["gone"]


def test_the_outbox_keeps_the_most_recent_subscriptions_but_none_with_a_delivery_pending(outbox) -> None:
    outbox.subscribe("a", ALL)
    outbox.enqueue(make(1, "queued", "a"))
    outbox.subscribe("b", ALL)
    outbox.subscribe("c", ALL)  # keep=2: b goes, a waits for its delivery
    assert [outbox.describe(j) is not None for j in "abc"] == [True, False, True]
    held = outbox.take(now=1)
    outbox.record(held, attempt(held, "delivered"))
    outbox.subscribe("d", ALL)
    assert [outbox.describe(j) is not None for j in "abcd"] == [False, False, True, True]


def test_a_reopened_outbox_offers_held_deliveries_at_once_and_retries_when_due(tmp_path) -> None:
    first = SqliteOutbox(tmp_path, keep=8)
    first.subscribe("j", ALL)
    first.subscribe("k", ALL)
    for delivery in (make(1, "queued"), make(2, "running"), make(3, "queued", "k")):
        first.enqueue(delivery)
    tried = first.take(now=1)
    first.record(tried, attempt(tried, "retrying", next_at=100))
    assert {first.take(now=1).id, first.take(now=1).id} == {"msg_2", "msg_3"}  # held at the crash
    # not closed, as a killed process leaves it: what was committed is what the next one reads
    second = SqliteOutbox(tmp_path, keep=8)
    try:
        assert second.pending() == 3
        again = [second.take(now=2), second.take(now=2)]
        assert again == [make(2, "running"), make(3, "queued", "k")] and second.take(now=2) is None
        second.record(again[0], attempt(again[0], "delivered"))
        assert second.take(now=100) == dataclasses.replace(make(1, "queued"), due=100, attempts=1)
        assert [a["outcome"] for a in second.describe("j")["deliveries"]] == ["retrying", "delivered"]
        assert second.wants("j", "running") is None and second.wants("j", "succeeded") == ALL
    finally:
        first.close()
        second.close()


def restart_config(folder) -> ServiceConfig:
    return ServiceConfig(
        data_dir=str(folder),
        max_queue=2,
        webhook_secret=SECRET,
        webhook_allow_hosts=("127.0.0.1",),
        webhook_backoff=2,
        webhook_attempts=3,
        webhook_timeout=1.0,
    )


def test_a_delivery_pending_at_a_restart_is_sent_by_the_next_server_with_the_same_id(
    small_pipeline, receiver, tmp_path
) -> None:
    receiver.script["/restart"] = [503, 200]
    with running(create_app(restart_config(tmp_path), pipeline=small_pipeline)) as url:
        job = submit(url, f"{receiver.url}/restart")
        [tried] = deliveries(url, job["id"], 1)
    assert tried["outcome"] == "retrying"
    assert [p for p, _, _ in receiver.got].count("/restart") == 1  # stopped before the retry was due
    with running(create_app(restart_config(tmp_path), pipeline=small_pipeline)) as url:
        (first, _), (second, body) = receiver.requests("/restart", 2)
        assert first["webhook-id"] == second["webhook-id"] == tried["id"] and verify(SECRET, second, body)
        shown = deliveries(url, job["id"], 2)
    assert [(a["attempt"], a["outcome"]) for a in shown] == [(1, "retrying"), (2, "delivered")]


def test_a_status_recorded_but_not_enqueued_before_a_stop_is_sent_after_the_restart(
    small_pipeline, receiver, tmp_path
) -> None:
    with running(create_app(restart_config(tmp_path), pipeline=small_pipeline)) as url:
        r = requests.post(f"{url}/v1/generations", json=FAST, timeout=60)
        job = r.json()
    # What a crash between the job store's commit and the outbox's leaves: subscribed, nothing enqueued.
    outbox = SqliteOutbox(tmp_path, keep=8)
    outbox.subscribe(job["id"], Subscription(f"{receiver.url}/caught-up", TERMINAL, ("completed",)))
    outbox.close()
    with running(create_app(restart_config(tmp_path), pipeline=small_pipeline)):
        [(_, body)] = receiver.requests("/caught-up", 1)
    payload = json.loads(body)
    assert payload["type"] == "job.succeeded" and payload["data"]["id"] == job["id"]


def fleet_outbox(redis_server, *, lease: float = 30) -> RedisOutbox:
    return RedisOutbox(redis_server.url, keep=8, lease=lease, retention=60)


def test_a_delivery_enqueued_by_one_fleet_process_is_taken_by_another_and_never_twice(redis_server) -> None:
    replica, worker = fleet_outbox(redis_server), fleet_outbox(redis_server)
    try:
        replica.subscribe("j", ALL)
        assert worker.wants("j", "queued") == ALL
        assert replica.enqueue(make(1, "queued"))
        assert worker.wants("j", "queued") is None and not worker.enqueue(make(2, "queued"))
        assert worker.enqueue(make(3, "running")) and replica.pending() == worker.pending() == 2
        taken = worker.take(now=1)
        assert taken == make(1, "queued") and replica.take(now=1) is None  # one at a time, fleet-wide
        worker.record(taken, attempt(taken, "delivered"))
        assert replica.take(now=1) == make(3, "running")
        assert [a["outcome"] for a in replica.describe("j")["deliveries"]] == ["delivered"]
    finally:
        replica.close()
        worker.close()


def test_a_delivery_held_by_a_vanished_process_is_offered_again_after_its_lease_with_the_same_id(
    redis_server,
) -> None:
    vanished, alive = fleet_outbox(redis_server, lease=0.3), fleet_outbox(redis_server, lease=0.3)
    try:
        vanished.subscribe("j", ALL)
        vanished.enqueue(make(1, "queued"))
        held = vanished.take(now=1)  # and then its process is killed: it never records
        assert alive.take(now=1) is None and alive.pending() == 1
        time.sleep(0.4)
        again = alive.take(now=1)
        assert again == held == make(1, "queued")
        # The vanished holder's late answer is logged, but the delivery is its new holder's now.
        vanished.record(held, attempt(held, "retrying", next_at=2))
        assert alive.take(now=5) is None and alive.pending() == 1
        alive.record(again, attempt(again, "delivered"))
        assert alive.pending() == 0 and alive.take(now=5) is None
        assert [a["outcome"] for a in alive.describe("j")["deliveries"]] == ["retrying", "delivered"]
    finally:
        vanished.close()
        alive.close()


def test_a_jobs_webhook_record_in_redis_expires_as_the_job_does(redis_server) -> None:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    outbox = fleet_outbox(redis_server)
    try:
        client.hset("glide:job:running", "record", "{}")  # the store's job key: no expiry while it runs
        client.hset("glide:job:finished", "record", "{}")
        client.expire("glide:job:finished", 1000)  # finished: kept keep_finished_seconds
        for n, job_id in enumerate(("running", "finished", "unknown")):
            outbox.subscribe(job_id, ALL)
            outbox.enqueue(make(n, "queued", job_id))
            held = outbox.take(now=1)
            outbox.record(held, attempt(held, "delivered"))
        ttl = {
            job_id: tuple(client.ttl(f"glide:job:{job_id}:{part}") for part in ("webhook", "webhook-log"))
            for job_id in ("running", "finished", "unknown")
        }
        assert ttl["running"] == (-1, -1)
        assert 990 < ttl["finished"][0] <= 1000 and 990 < ttl["finished"][1] <= 1000
        assert 50 < ttl["unknown"][0] <= 60 and 50 < ttl["unknown"][1] <= 60  # `retention`
    finally:
        outbox.close()
        client.close()


def fleet_sender(outbox: Outbox):
    from glide_api.webhooks import Sender

    return Sender(
        outbox,
        WebhookSecret.parse(SECRET),
        allow_hosts=("127.0.0.1",),
        timeout=1.0,
        attempts=2,
        backoff=0.05,
        workers=1,
    )


def enqueue_elsewhere(outbox: Outbox, url: str, delivery_id: str) -> None:
    hook = Subscription(url, frozenset({"succeeded"}), ("completed",))
    outbox.subscribe(delivery_id, hook)
    outbox.enqueue(Delivery(delivery_id, delivery_id, "succeeded", "job.succeeded", url, b"{}", due=0))


def test_a_sender_notices_a_delivery_another_process_enqueued(redis_server, receiver) -> None:
    sending, enqueuing = fleet_outbox(redis_server), fleet_outbox(redis_server)
    sender = fleet_sender(sending)
    sender.start()
    try:
        time.sleep(0.1)  # the sender is asleep, with nothing due, when the other process enqueues
        enqueue_elsewhere(enqueuing, f"{receiver.url}/elsewhere", "msg_far")
        [(headers, body)] = receiver.requests("/elsewhere", 1, timeout=3)
        assert headers["webhook-id"] == "msg_far" and verify(SECRET, headers, body)
    finally:
        sender.close()
        sending.close()
        enqueuing.close()


def test_a_sender_outlives_a_redis_outage_and_sends_once_redis_is_back(redis_server, receiver) -> None:
    sending, enqueuing = fleet_outbox(redis_server), fleet_outbox(redis_server)
    sender = fleet_sender(sending)
    sender.start()
    try:
        redis_server.kill()
        time.sleep(1.3)  # the sender looks (every second) and finds Redis gone
        redis_server.start()
        enqueue_elsewhere(enqueuing, f"{receiver.url}/after-outage", "msg_back")
        [(headers, _)] = receiver.requests("/after-outage", 1, timeout=6)
        assert headers["webhook-id"] == "msg_back"
    finally:
        sender.close()
        sending.close()
        enqueuing.close()


def test_in_a_fleet_the_worker_enqueues_what_it_sees_and_a_replica_sends_it(
    small_pipeline, redis_server, receiver
) -> None:
    from glide_api.engine.fleet import Fleet
    from glide_api.server.job_webhooks import JobWebhooks
    from glide_api.server.service import engine_config

    shared = {"queue": redis_server.url, "webhook_allow_hosts": ("127.0.0.1",), "max_queue": 4}
    # The worker has no secret: it only enqueues; the replica's sender signs and sends.
    worker_config = ServiceConfig(**shared)
    worker_hooks = JobWebhooks(worker_config)
    worker = Fleet.worker(
        redis_server.url,
        small_pipeline,
        engine_config(worker_config),
        worker_id="w1",
        on_change=worker_hooks.changed,
    )
    worker.start()
    try:
        config = ServiceConfig(**shared, webhook_secret=SECRET, webhook_backoff=0.05, webhook_timeout=1.0)
        with running(create_app(config)) as url:
            r = requests.post(
                f"{url}/v1/generations",
                json={**FAST, "webhook": f"{receiver.url}/fleet", "webhook_events": ["all"]},
                headers=ASYNC,
                timeout=30,
            )
            assert r.status_code == 202, r.text
            got = receiver.requests("/fleet", 3)
            assert [json.loads(b)["type"] for _, b in got] == ["job.queued", "job.running", "job.succeeded"]
            assert all(verify(SECRET, headers, body) for headers, body in got)
            shown = deliveries(url, r.json()["id"], 3)
            assert [a["outcome"] for a in shown] == ["delivered"] * 3
    finally:
        worker.close()
        worker_hooks.close()


def test_a_receivers_retry_after_is_waited_for_before_the_next_attempt(hooks_url, receiver) -> None:
    receiver.script["/busy"] = [429, 200]
    job = submit(hooks_url, f"{receiver.url}/busy")
    (first, _), (second, _) = receiver.requests("/busy", 2, timeout=15)
    waited = int(second["webhook-timestamp"]) - int(first["webhook-timestamp"])
    assert waited >= 1, waited  # the schedule alone (webhook_backoff 0.05 s) would retry at once
    attempts = requests.get(f"{hooks_url}/v1/jobs/{job['id']}", timeout=10).json()["webhook"]["deliveries"]
    assert attempts[0]["status"] == 429 and attempts[0]["next_attempt_at"] - attempts[0]["at"] >= 2


def test_a_delivery_over_https_checks_the_receivers_certificate_and_host_name(tmp_path) -> None:
    import ssl
    import subprocess

    from glide_api.webhooks.targets import Target, post

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    got: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_port
        trusting = ssl.create_default_context(cafile=str(cert))
        headers = {"Content-Type": "application/json"}
        allow = ("localhost", "127.0.0.1")
        answer = post(Target.parse(f"https://localhost:{port}/hook"), b'{"a": 1}', headers,
                      timeout=5, allow_hosts=allow, tls=trusting)  # fmt: skip
        assert answer.ok and answer.status == 204 and got == [b'{"a": 1}']
        untrusted = post(
            Target.parse(f"https://localhost:{port}/hook"), b"{}", headers, timeout=5, allow_hosts=allow
        )
        assert untrusted.status is None and "certificate" in (untrusted.error or "").lower()
        wrong_name = post(Target.parse(f"https://127.0.0.1:{port}/hook"), b"{}", headers,
                          timeout=5, allow_hosts=allow, tls=trusting)  # fmt: skip
        assert wrong_name.status is None and len(got) == 1, wrong_name
    finally:
        server.shutdown()
