"""The serving model over real HTTP (the production server, in-process): health answers under held
connections, the long-request caps, slow clients closed, and clients that leave freeing their thread."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest
import requests
from sse import read_events

LONG = {"prompt": "long", "size": 64, "steps": "1000", "upsample_steps": "1000"}
ASYNC = {"Prefer": "respond-async"}


@pytest.fixture(scope="module")
def served(small_pipeline) -> Iterator[tuple[str, object]]:
    """The app with small caps (so tests can reach them) and short timeouts; yields (url, service)."""
    from conftest import running

    from glide_api.config import ServiceConfig
    from glide_api.server import create_app

    config = ServiceConfig(
        data_dir="none",
        max_steps=1000,
        max_open_streams=40,
        max_sync_waits=8,
        max_queue=16,
        client_timeout=2.0,
        stream_heartbeat=0.5,
    )
    app = create_app(config, pipeline=small_pipeline)
    with running(app) as url:
        yield url, app.extensions["glide_api"]


def until(condition: Callable[[], bool], *, within: float, what: str) -> float:
    """Poll `condition` until true; the seconds it took. Fails after `within` seconds."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < within, f"not within {within} s: {what}"
        time.sleep(0.05)
    return time.monotonic() - start


def raw(url: str, request: bytes) -> socket.socket:
    """A socket that has sent `request` (perhaps only part of one) and reads nothing yet."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    sock.sendall(request)
    return sock


@contextmanager
def long_job(url: str) -> Iterator[str]:
    """A job that keeps the worker busy for the whole test; cancelled when done."""
    job = requests.post(f"{url}/v1/generations", json=LONG, headers=ASYNC, timeout=10).json()
    try:
        until(
            lambda: requests.get(f"{url}/v1/jobs/{job['id']}", timeout=5).json()["status"] == "running",
            within=30,
            what="the long job started",
        )
        yield job["id"]
    finally:
        requests.post(f"{url}/v1/jobs/{job['id']}/cancel", timeout=10)


def test_health_answers_within_a_second_with_streams_sync_waits_and_half_sent_requests_held(served) -> None:
    url, service = served
    sockets: list[socket.socket] = []
    with long_job(url) as job_id, ThreadPoolExecutor(8) as pool:
        try:
            events = f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            sockets += [raw(url, events) for _ in range(40)]
            sockets += [raw(url, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Half: ") for _ in range(60)]
            waiting = [
                pool.submit(requests.post, f"{url}/v1/generations", json=LONG | {"size": 32}, timeout=60)
                for _ in range(8)
            ]
            until(lambda: len(service.streams) == 40, within=10, what="40 streams open")
            until(lambda: len(service.sync_waits) == 8, within=10, what="8 synchronous waits")

            for path in ("/healthz", "/readyz", "/v1/settings"):
                for _ in range(5):
                    start = time.monotonic()
                    assert requests.get(f"{url}{path}", timeout=5).status_code == 200
                    assert time.monotonic() - start < 1.0, path

            # Beyond their caps, long requests are refused at once, before anything is queued.
            stream = requests.get(f"{url}/v1/jobs/{job_id}/events", timeout=5)
            assert stream.status_code == 503 and stream.json()["error"]["param"] is None
            assert stream.json()["error"]["code"] == "server_busy" and int(stream.headers["Retry-After"]) > 0
            assert "max_open_streams" in stream.json()["error"]["message"]
            queued_before = len(requests.get(f"{url}/v1/jobs", timeout=5).json()["jobs"])
            sync = requests.post(f"{url}/v1/generations", json={"prompt": "one too many"}, timeout=5)
            assert sync.status_code == 503 and "max_sync_waits" in sync.json()["error"]["message"]
            assert len(requests.get(f"{url}/v1/jobs", timeout=5).json()["jobs"]) == queued_before

            # Half-sent requests are closed after client_timeout (2 s), holding no thread meanwhile.
            half_sent = sockets[40:]
            for sock in half_sent:
                sock.settimeout(10)
            assert all(sock.recv(1) == b"" for sock in half_sent)
        finally:
            for sock in sockets:
                sock.close()
            for job in requests.get(f"{url}/v1/jobs", timeout=5).json()["jobs"]:
                requests.post(f"{url}/v1/jobs/{job['id']}/cancel", timeout=5)
        for answer in waiting:
            assert answer.result(timeout=30).status_code == 409  # cancelled
    until(lambda: len(service.streams) == 0, within=5, what="the streams closed")


def test_a_stream_whose_client_left_frees_its_place_within_one_heartbeat(served) -> None:
    url, service = served
    with long_job(url):
        # A queued job's stream sends nothing but heartbeats (0.5 s here) while it waits.
        queued = requests.post(
            f"{url}/v1/generations", json=LONG | {"size": 32}, headers=ASYNC, timeout=10
        ).json()
        sock = raw(url, f"GET /v1/jobs/{queued['id']}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        until(lambda: len(service.streams) == 1, within=5, what="the stream opened")
        sock.close()
        took = until(lambda: len(service.streams) == 0, within=5, what="the stream's place freed")
        assert took < 0.5 + 0.5  # one heartbeat, and slack
        assert service.engine.watchers(queued["id"]) == 0
        requests.post(f"{url}/v1/jobs/{queued['id']}/cancel", timeout=10)


def test_a_synchronous_request_whose_client_left_cancels_its_job_unless_someone_watches_it(served) -> None:
    url, service = served

    def sync_request(prompt: str) -> tuple[socket.socket, str]:
        body = f'{{"prompt": "{prompt}", "size": 64, "steps": "1000", "upsample_steps": "1000"}}'.encode()
        head = (
            f"POST /v1/generations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        sock = raw(url, head + body)

        def jobs() -> list[dict]:
            listed = requests.get(f"{url}/v1/jobs", timeout=5).json()["jobs"]
            return [job for job in listed if job["request"]["prompt"] == prompt]

        until(lambda: bool(jobs()), within=10, what="the job was queued")
        return sock, jobs()[0]["id"]

    def status(job_id: str) -> str:
        return requests.get(f"{url}/v1/jobs/{job_id}", timeout=5).json()["status"]

    alone, alone_id = sync_request("nobody else watches")
    alone.close()
    until(lambda: status(alone_id) == "cancelled", within=3, what="the job of a gone client cancelled")
    until(lambda: len(service.sync_waits) == 0, within=3, what="its thread freed")

    watched, watched_id = sync_request("watched")
    with requests.get(f"{url}/v1/jobs/{watched_id}/events", stream=True, timeout=30) as stream:
        events = read_events(stream)  # kept: a dropped reader would close the connection
        next(events)  # an event from the job: the stream follows it now
        watched.close()
        until(lambda: len(service.sync_waits) == 0, within=3, what="the gone client's thread freed")
        time.sleep(0.5)  # a cancel would have been asked for by now
        job = service.engine.get(watched_id)
        assert job.status in ("queued", "running") and not job.cancel_requested, job
        assert next(events)[0] in ("started", "progress")  # the stream goes on
    requests.post(f"{url}/v1/jobs/{watched_id}/cancel", timeout=10)


def test_a_url_longer_than_max_url_bytes_is_a_json_414(served) -> None:
    url, _ = served
    answer = requests.get(f"{url}/healthz", params={"q": "x" * 9000}, timeout=10)
    assert answer.status_code == 414 and answer.json()["error"]["param"] == "url"
    assert "at most 8192 bytes (max_url_bytes" in answer.json()["error"]["message"]


def test_errors_the_server_finds_before_the_app_have_the_json_error_shape_too(served) -> None:
    url, _ = served
    too_big = requests.get(f"{url}/healthz", params={"q": "x" * 300_000}, timeout=10)
    assert too_big.status_code == 431 and too_big.headers["Content-Type"] == "application/json"
    assert too_big.json()["error"]["code"] == "headers_too_large"
    sock = raw(url, b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
    answer = b""
    while chunk := sock.recv(65536):  # the server closes the connection after an error it found
        answer += chunk
    sock.close()
    answer = answer.decode()
    head, _, body = answer.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 400") and "application/json" in head
    assert '"type": "invalid_request_error"' in body
