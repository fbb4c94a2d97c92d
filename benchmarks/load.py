"""Load and soak: N clients for T minutes on the three APIs, while a prober times the health routes.

    python benchmarks/load.py --serve --clients 5 --minutes 0.5       # starts a demo server itself
    python benchmarks/load.py --serve --clients 50 --minutes 5 --held-streams 40 --half-sent 60
    python benchmarks/load.py --url http://127.0.0.1:5000 --api-key KEY --pid 1234

Each client loops over the operations of OPERATIONS, from its own offset: the original `GET /image`, v1
`POST /v1/generations` synchronous, asynchronous (`Prefer: respond-async`, then polling) and
followed by its event stream, and OpenAI `POST /v1/images/generations` (plain JSON, through the
official `openai` client when it is installed, and `stream=true`). Every job asks for `--size` px
and `--steps` base steps (the original route has no steps: it gets the server's default, which
`--serve` sets to `--steps`). A 429 or a 503 with Retry-After is back-pressure: the client waits as
told and goes on. Meanwhile a prober asks `/healthz` and `/readyz` every 0.5 s, each on a new
connection with a `--health-timeout` client timeout, and the server's memory is sampled every second.

`--held-streams K` keeps K event streams open the whole run, spread over `--held-jobs` chains of
long jobs (`--held-steps` each): a chain queues its next job when the current one is half done,
and the last ones are cancelled at the end. They take engine time like any job. `--half-sent K`
keeps K connections that sent half a request header and stopped (one the server closes is opened
again, and counted).

After `--minutes`, clients finish the operation they are in (at most `--drain` seconds), then every
job that was accepted is checked. A job is lost when it was accepted (200/202 with its id, or a 504
naming it) and never reached a final state, or could not be fetched afterwards (404 for it or for
its image); a stream is lost when it ends without a final event. The exit code is 1 when any
answer was a 5xx (other than a 503 with Retry-After) or of an unexpected shape, any job or stream
was lost or failed, any request failed in transport (refused, reset, timed out), or an operation
was still running when the drain ended; else 0.

Memory is the resident set (VmRSS, /proc) of the server process and its children: the one `--serve`
started, or `--pid`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import selectors
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

# Each client cycles through these, starting at its own offset (so any 7 clients start all 7 kinds);
# the v1 kinds come twice as often as the others.
OPERATIONS = (
    "legacy_image", "v1_sync", "v1_async", "v1_stream", "openai", "openai_client", "openai_stream",
    "v1_sync", "v1_async", "v1_stream",
)  # fmt: skip
FINAL_STATUSES = ("succeeded", "failed", "cancelled")
STREAMS_PER_HELD_JOB = 10
SPARE_AT = 0.5  # a held chain queues its next job when the current one is this far done
CONNECT_TIMEOUT = 10.0
STREAM_READ_TIMEOUT = 60.0  # the server sends a keep-alive comment every 15 s of quiet
POLL_SECONDS = 0.5
PROBE_SECONDS = 0.5
SAMPLES_KEPT = 10  # bodies of unexpected answers kept for the report
HOLD_SECONDS = 60.0  # at most this long for the held streams to open before the clock starts
FINAL_CHECK_SECONDS = 10.0  # per job not yet seen final once the drain is over
SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = ("red", "green", "blue", "yellow", "white", "black")


def prompt() -> str:
    """A prompt the demo models know (any model takes it)."""
    shape, (colour, background) = random.choice(SHAPES), random.sample(COLOURS, 2)
    return f"a {colour} {shape} on a {background} background"


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)  # nearest rank: the smallest value with q % of them at or below it
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:  # an HTTP date: not what this server sends, but still a "retry later"
        return 1.0


@dataclass
class Stats:
    """Everything the run measured; one lock guards it all (the counts are cheap)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: Counter = field(default_factory=Counter)  # status code -> requests
    by_route: dict[str, Counter] = field(default_factory=dict)  # request kind -> status -> count
    backpressure: Counter = field(default_factory=Counter)  # 429 / 503 with Retry-After
    server_errors: list[dict[str, Any]] = field(default_factory=list)  # samples of 5xx bodies
    transport: Counter = field(default_factory=Counter)  # exception name -> count
    transport_samples: list[str] = field(default_factory=list)
    latency: dict[str, list[float]] = field(default_factory=dict)  # operation -> seconds
    jobs: dict[str, str] = field(default_factory=dict)  # accepted job id -> "queued" until seen final
    lost: list[dict[str, str]] = field(default_factory=list)
    failed_jobs: list[dict[str, str]] = field(default_factory=list)
    streams: Counter = field(default_factory=Counter)  # opened, final, lost (no final event), broken
    health: dict[str, list[float]] = field(default_factory=dict)  # route -> seconds
    health_status: dict[str, Counter] = field(default_factory=dict)
    health_timeouts: Counter = field(default_factory=Counter)
    health_errors: Counter = field(default_factory=Counter)
    half_sent: Counter = field(default_factory=Counter)  # opened, closed_by_server, answers ...
    rss: list[int] = field(default_factory=list)  # the server's resident bytes, once a second
    surprises: Counter = field(default_factory=Counter)  # answers of an unexpected shape
    surprise_samples: list[str] = field(default_factory=list)
    held_now: int = 0  # held streams open at this moment
    held_samples: list[int] = field(default_factory=list)  # held_now twice a second during the run
    unfinished: int = 0  # operations still running when the drain ended

    def response(self, kind: str, status: int, headers: Any, body: Callable[[], str]) -> None:
        with self.lock:
            self.statuses[status] += 1
            self.by_route.setdefault(kind, Counter())[status] += 1
            if status == 429 or (status == 503 and retry_after(headers) is not None):
                self.backpressure[status] += 1
            elif status >= 500 and len(self.server_errors) < SAMPLES_KEPT:
                self.server_errors.append({"kind": kind, "status": status, "body": body()[:500]})

    def transport_error(self, kind: str, error: Exception) -> None:
        with self.lock:
            self.transport[type(error).__name__] += 1
            if len(self.transport_samples) < SAMPLES_KEPT:
                self.transport_samples.append(f"{kind}: {type(error).__name__}: {str(error)[:300]}")

    def took(self, operation: str, seconds: float) -> None:
        with self.lock:
            self.latency.setdefault(operation, []).append(seconds)

    def accepted(self, job_id: str, status: str = "queued") -> None:
        with self.lock:
            self.jobs.setdefault(job_id, status)

    def reached(self, job_id: str, status: str, kind: str) -> None:
        with self.lock:
            self.jobs[job_id] = status
            if status == "failed":
                self.failed_jobs.append({"job": job_id, "kind": kind})

    def lose(self, what: str, reason: str) -> None:
        with self.lock:
            self.lost.append({"what": what, "reason": reason})

    def count_stream(self, outcome: str) -> None:
        with self.lock:
            self.streams[outcome] += 1

    def hold(self, change: int) -> None:
        """A held stream opened (+1) or ended (-1)."""
        with self.lock:
            self.held_now += change

    def unexpected(self, operation: str, error: Exception) -> None:
        with self.lock:
            self.surprises[f"{operation}: {type(error).__name__}"] += 1
            if len(self.surprise_samples) < SAMPLES_KEPT:
                self.surprise_samples.append(f"{operation}: {traceback.format_exc(limit=-2)}")

    def five_xx(self) -> int:
        return sum(n for s, n in self.statuses.items() if s >= 500) - self.backpressure[503]


@dataclass
class Deadline:
    """The moment no operation waits past: the run's end plus the drain (moved once the clock starts)."""

    at: float


def read_events(r: requests.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) of a server-sent event stream until it ends; comments are skipped."""
    name, data = "message", []
    for line in r.iter_lines(decode_unicode=True):
        if line == "":
            if data:
                yield name, json.loads("\n".join(data))
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


class Api:
    """One client's connection (keep-alive session) and the bookkeeping of every request it sends."""

    def __init__(self, base: str, api_key: str | None, stats: Stats, timeout: float) -> None:
        self.base = base.rstrip("/")
        self.stats = stats
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "glide-api-load"
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    def send(self, kind: str, method: str, path: str, *, stream: bool = False, **kw: Any) -> Any:
        """The response, or None after a transport error (counted). Streams are read by the caller."""
        timeout = (CONNECT_TIMEOUT, STREAM_READ_TIMEOUT if stream else self.timeout)
        try:
            r = self.session.request(method, self.base + path, timeout=timeout, stream=stream, **kw)
        except requests.RequestException as error:
            self.stats.transport_error(kind, error)
            return None
        self.stats.response(kind, r.status_code, r.headers, lambda: r.text)
        return r


class Client:
    """One simulated user: operations back to back until the deadline."""

    def __init__(
        self,
        api: Api,
        args: argparse.Namespace,
        stop: threading.Event,
        deadline: Deadline,
        *,
        openai: bool = True,
    ) -> None:
        self.api, self.stats, self.args, self.stop, self.deadline = api, api.stats, args, stop, deadline
        self.sdk: Any = None  # the `openai` package, when installed
        if openai and not args.no_openai_client:
            try:
                import openai as sdk
            except ImportError:
                pass
            else:
                self.sdk = sdk
                self.sdk_client = sdk.OpenAI(
                    base_url=api.base + "/v1",
                    api_key=args.api_key or "unused",
                    max_retries=0,  # back-pressure is counted here, not retried inside the client
                    timeout=args.request_timeout,
                )

    def run(self, offset: int) -> None:
        while not self.stop.is_set():
            operation = OPERATIONS[offset % len(OPERATIONS)]
            offset += 1
            if operation == "openai_client" and self.sdk is None:
                operation = "openai"
            start = time.perf_counter()
            try:
                succeeded = getattr(self, "op_" + operation)()
            except Exception as error:  # an answer of the wrong shape: counted, and the client goes on
                self.stats.unexpected(operation, error)
                continue
            if succeeded:
                self.stats.took(operation, time.perf_counter() - start)

    # --- helpers ---------------------------------------------------------------------------------

    def backoff(self, r: Any) -> bool:
        """True (after waiting as told) when the answer was back-pressure."""
        if r is None:
            time.sleep(1.0)
            return False
        return self.wait_out(r.status_code, r.headers)

    def wait_out(self, status: int, headers: Any) -> bool:
        wait = retry_after(headers)
        if status == 429 or (status == 503 and wait is not None):
            left = self.deadline.at - time.monotonic()
            time.sleep(max(0.0, min(wait if wait is not None else 1.0, 30.0, left)))
            return True
        return False

    def body(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"prompt": prompt(), "steps": self.args.steps, **(extra or {})}

    def job_of_error(self, r: requests.Response) -> str | None:
        """The job a 5xx names (a synchronous wait that timed out keeps its job): follow it."""
        try:
            return r.json()["error"].get("job_id")
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def settle(self, r: Any, kind: str) -> None:
        """After an answer that is not the op's success: wait out back-pressure, follow a named job."""
        if self.backoff(r) or r is None:
            return
        if r.status_code >= 500 and (job_id := self.job_of_error(r)):
            self.stats.accepted(job_id)
            self.poll(job_id, kind)

    def poll(self, job_id: str, kind: str, until: float | None = None) -> dict[str, Any] | None:
        """Poll a job until it is final; the job, or None (lost, or still not final at `until`)."""
        until = self.deadline.at if until is None else until
        while time.monotonic() < until:
            r = self.api.send("poll", "GET", f"/v1/jobs/{job_id}")
            if r is not None and r.status_code == 200:
                job = r.json()
                if job["status"] in FINAL_STATUSES:
                    self.stats.reached(job_id, job["status"], kind)
                    return job
            elif r is not None and r.status_code == 404:
                self.lost(job_id, kind, "404 while it was followed")
                return None
            elif self.backoff(r):
                continue
            time.sleep(POLL_SECONDS)
        return None

    def lost(self, job_id: str, kind: str, reason: str) -> None:
        self.stats.lose(f"job {job_id} ({kind})", reason)
        self.stats.reached(job_id, "lost", kind)

    def fetch_image(self, job: dict[str, Any], kind: str) -> bool:
        """A succeeded job's first image can be fetched (its result is not already gone)."""
        if job["status"] != "succeeded":
            return False
        r = self.api.send("image", "GET", job["images"][0]["url"])
        if r is not None and r.status_code == 200:
            return True
        if r is not None and r.status_code == 404:
            self.stats.lose(f"job {job['id']} ({kind})", "its image answered 404")
        return False

    def follow_stream(self, job_id: str, kind: str) -> dict[str, Any] | None:
        """Read a job's event stream to its final event; the job from `succeeded`, or a status dict."""
        while time.monotonic() < self.deadline.at:
            r = self.api.send("events", "GET", f"/v1/jobs/{job_id}/events", stream=True)
            if r is None or r.status_code != 200:
                if r is not None and r.status_code == 404:
                    self.lost(job_id, kind, "its event stream answered 404")
                    return None
                if not self.backoff(r):
                    return None
                continue
            self.stats.count_stream("opened")
            if kind == "held":
                self.stats.hold(+1)
            try:
                for name, data in read_events(r):
                    if name in FINAL_STATUSES:
                        self.stats.count_stream("final")
                        self.stats.reached(job_id, name, kind)
                        return data.get("job") or {"id": job_id, "status": name}
            except (requests.RequestException, ValueError) as error:
                self.stats.transport_error("events", error)
                self.stats.count_stream("broken")
                return None
            finally:
                r.close()
                if kind == "held":
                    self.stats.hold(-1)
            self.stats.count_stream("lost")
            self.stats.lose(f"stream of job {job_id} ({kind})", "ended without a final event")
            return None
        return None

    # --- operations: each returns True when it succeeded (its time counts in the latency) --------

    def op_legacy_image(self) -> bool:
        params = {"size": self.args.size, "prompt": prompt(), "batch_size": 1}
        r = self.api.send("legacy_image", "GET", "/image", params=params)
        if r is not None and r.status_code == 200:
            self.stats.reached(r.json()["job_id"], "succeeded", "legacy_image")
            return True
        self.settle(r, "legacy_image")
        return False

    def op_v1_sync(self) -> bool:
        r = self.api.send("v1_sync", "POST", "/v1/generations", json=self.body({"size": self.args.size}))
        if r is not None and r.status_code == 200:
            job = r.json()
            self.stats.reached(job["id"], job["status"], "v1_sync")
            return job["status"] == "succeeded"
        if r is not None and r.status_code == 202:  # it outlasted sync_timeout and runs on
            self.stats.accepted(r.json()["id"])
            job = self.poll(r.json()["id"], "v1_sync")
            return job is not None and self.fetch_image(job, "v1_sync")
        self.settle(r, "v1_sync")
        return False

    def submit(self, kind: str, steps: int | None = None) -> tuple[str | None, Any]:
        """An asynchronous v1 job's id (202) and the answer; no id when refused (back-pressure waited)."""
        body = self.body({"size": self.args.size} | ({"steps": steps} if steps else {}))
        start = time.perf_counter()
        r = self.api.send(
            "v1_submit", "POST", "/v1/generations", json=body, headers={"Prefer": "respond-async"}
        )
        if r is not None and r.status_code == 202:
            self.stats.took("v1_async_submit", time.perf_counter() - start)
            job_id = r.json()["id"]
            self.stats.accepted(job_id)
            return job_id, r
        self.settle(r, kind)
        return None, r

    def op_v1_async(self) -> bool:
        job_id, _ = self.submit("v1_async")
        job = job_id and self.poll(job_id, "v1_async")
        return bool(job) and self.fetch_image(job, "v1_async")

    def op_v1_stream(self) -> bool:
        job_id, _ = self.submit("v1_stream")
        job = job_id and self.follow_stream(job_id, "v1_stream")
        return bool(job) and self.fetch_image(job, "v1_stream")

    def openai_body(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        size = f"{self.args.size}x{self.args.size}"
        return self.body({"size": size, "n": 1, "response_format": "b64_json", **(extra or {})})

    def op_openai(self) -> bool:
        r = self.api.send("openai", "POST", "/v1/images/generations", json=self.openai_body())
        if r is not None and r.status_code == 200:
            return bool(r.json()["data"][0]["b64_json"])
        self.settle(r, "openai")
        return False

    def op_openai_client(self) -> bool:
        sdk = self.sdk
        try:
            raw = self.sdk_client.images.with_raw_response.generate(
                prompt=prompt(),
                size=f"{self.args.size}x{self.args.size}",
                response_format="b64_json",
                extra_body={"steps": self.args.steps},
            )
        except sdk.APIStatusError as error:
            response = error.response
            self.stats.response(
                "openai_client", response.status_code, response.headers, lambda: response.text
            )
            self.settle(response, "openai_client")
            return False
        except (sdk.APIConnectionError, sdk.APITimeoutError) as error:
            self.stats.transport_error("openai_client", error)
            return False
        self.stats.response("openai_client", raw.status_code, raw.headers, lambda: raw.text)
        return bool(raw.parse().data[0].b64_json)

    def op_openai_stream(self) -> bool:
        body = self.openai_body({"stream": True, "partial_images": 1})
        r = self.api.send("openai_stream", "POST", "/v1/images/generations", json=body, stream=True)
        if r is None or r.status_code != 200:
            self.settle(r, "openai_stream")
            return False
        self.stats.count_stream("opened")
        try:
            for name, data in read_events(r):
                if name == "image_generation.completed":
                    self.stats.count_stream("final")
                    return bool(data["b64_json"])
                if name == "error":
                    self.stats.count_stream("final")
                    with self.stats.lock:
                        self.stats.failed_jobs.append(
                            {"job": "(in an OpenAI stream)", "kind": str(data)[:300]}
                        )
                    return False
        except (requests.RequestException, ValueError) as error:
            self.stats.transport_error("openai_stream", error)
            self.stats.count_stream("broken")
            return False
        finally:
            r.close()
        self.stats.count_stream("lost")
        self.stats.lose("an OpenAI stream", "ended without a completed or error event")
        return False


def guarded(stats: Stats, name: str, target: Callable[..., None], *args: Any) -> None:
    """Run a thread's target; an exception is counted as an unexpected answer, not lost silently."""
    try:
        target(*args)
    except Exception as error:
        stats.unexpected(name, error)


def done_part(job: dict[str, Any]) -> float:
    """How much of a job is done, 0 to 1 (a final job counts as done)."""
    if job["status"] in FINAL_STATUSES:
        return 1.0
    progress = job.get("progress")
    if job["status"] != "running" or not progress or not progress.get("total"):
        return 0.0
    return (progress["stage_index"] + progress["step"] / progress["total"]) / progress["stages"]


class HeldGroup:
    """`streams` event streams kept open on a chain of long jobs.

    The next job is submitted once the current one is SPARE_AT done: it waits in the queue behind
    the clients' jobs submitted meanwhile (the chain takes no more than its turn), and when the
    current job ends every stream moves on at once (a reconnect, not a wait for admission). At the
    end the group's unfinished jobs are cancelled: their streams must then end with `cancelled`.
    """

    def __init__(self, client: Client, streams: int, stop: threading.Event) -> None:
        self.client, self.streams, self.stop = client, streams, stop
        self.jobs: list[str] = []  # the chain, in order; every stream follows each in turn
        self.changed = threading.Condition()
        self.over = False

    def run(self) -> None:
        client = self.client
        slots = [
            threading.Thread(target=guarded, args=(client.stats, "held stream", self.follow), daemon=True)
            for _ in range(self.streams)
        ]
        for t in slots:
            t.start()
        try:
            while not self.stop.is_set():
                if self.jobs:
                    r = client.api.send("poll", "GET", f"/v1/jobs/{self.jobs[-1]}")
                    # A 404: it finished and was evicted while the next one was refused (429).
                    evicted = r is not None and r.status_code == 404
                    if not evicted and (r is None or r.status_code != 200 or done_part(r.json()) < SPARE_AT):
                        self.stop.wait(POLL_SECONDS)
                        continue
                job_id, r = client.submit("held", steps=client.args.held_steps)
                if job_id is None and r is not None and 400 <= r.status_code < 500 and r.status_code != 429:
                    print(f"held streams: the long job was refused: {r.status_code} {r.text[:300]}")
                    return
                if job_id is not None:
                    with self.changed:
                        self.jobs.append(job_id)
                        self.changed.notify_all()
        finally:
            for job_id in self.jobs:
                if client.stats.jobs.get(job_id) not in FINAL_STATUSES:
                    client.api.send("cancel", "POST", f"/v1/jobs/{job_id}/cancel")
            with self.changed:
                self.over = True
                self.changed.notify_all()
            for t in slots:
                t.join(max(0.0, client.deadline.at - time.monotonic()))
            for job_id in self.jobs:
                if client.stats.jobs.get(job_id) not in FINAL_STATUSES:
                    client.poll(job_id, "held")

    def follow(self) -> None:
        # Each stream on its own connection: that is what holds a server thread or channel.
        group = self.client
        api = Api(group.api.base, group.args.api_key, group.stats, group.args.request_timeout)
        client = Client(api, group.args, group.stop, group.deadline, openai=False)
        index = 0
        while True:
            with self.changed:
                while index >= len(self.jobs) and not self.over:
                    self.changed.wait()
                if index >= len(self.jobs):
                    return
                job_id = self.jobs[index]
            client.follow_stream(job_id, "held")
            index += 1


def half_sent(url: str, count: int, stats: Stats, stop: threading.Event) -> None:
    """Keep `count` connections that sent half a request header and then nothing."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    partial = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nX-Half: ".encode()
    selector = selectors.DefaultSelector()

    def open_one() -> None:
        try:
            s = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
            s.sendall(partial)
        except OSError:
            with stats.lock:
                stats.half_sent["connect_failed"] += 1
            return
        s.setblocking(False)
        selector.register(s, selectors.EVENT_READ, time.monotonic())
        with stats.lock:
            stats.half_sent["opened"] += 1

    while not stop.is_set():
        missing = count - len(selector.get_map())
        for _ in range(missing):
            open_one()
        for key, _ in selector.select(timeout=0.5 if not missing else 0.1):
            s: socket.socket = key.fileobj  # type: ignore[assignment]
            try:
                answer = s.recv(200)
            except OSError:
                answer = b""
            held = time.monotonic() - key.data
            selector.unregister(s)
            s.close()
            first = answer.split(b"\r\n", 1)[0].decode("latin-1") or "closed without an answer"
            with stats.lock:
                stats.half_sent["closed_by_server"] += 1
                stats.half_sent[f"answer: {first}"] += 1
                stats.latency.setdefault("half_sent_held", []).append(held)
    for key in list(selector.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]


def prober(url: str, args: argparse.Namespace, stats: Stats, stop: threading.Event) -> None:
    """`/healthz` and `/readyz` every PROBE_SECONDS, each on a new connection, as an orchestrator."""
    next_at = time.monotonic()
    while not stop.is_set():
        for route in ("/healthz", "/readyz"):
            start = time.perf_counter()
            try:
                r = requests.get(url + route, timeout=(args.health_timeout, args.health_timeout))
                seconds = time.perf_counter() - start
                with stats.lock:
                    stats.health.setdefault(route, []).append(seconds)
                    stats.health_status.setdefault(route, Counter())[r.status_code] += 1
            except requests.Timeout:
                with stats.lock:
                    stats.health_timeouts[route] += 1
            except requests.RequestException as error:
                with stats.lock:
                    stats.health_errors[f"{route}: {type(error).__name__}"] += 1
        next_at = max(next_at + PROBE_SECONDS, time.monotonic())  # a late probe skips ticks
        stop.wait(next_at - time.monotonic())


def tree_rss(pid: int) -> int | None:
    """Resident bytes of `pid` and its descendants (a pre-forking server keeps its models in a child)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo, found = 0, [pid], False
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        found = True
        except OSError:
            continue
        todo.extend(children.get(p, []))
    return total if found else None


def memory_sampler(pid: int, stats: Stats, stop: threading.Event) -> None:
    while True:
        rss = tree_rss(pid)
        if rss is not None:
            with stats.lock:
                stats.rss.append(rss)
        if stop.wait(1.0):
            return


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str, str]:
    port = free_port()
    command = [
        sys.executable, "-m", "glide_api.cli", "serve", "--model", "demo",
        "--host", "127.0.0.1", "--port", str(port),
        "--base-steps", str(args.steps),
        "--max-steps", str(max(args.steps, args.held_steps)),
        "--log-level", "warning",
        *shlex.split(args.serve_args),
    ]  # fmt: skip
    handle, log = tempfile.mkstemp(prefix="glide-load-server-", suffix=".log")
    print("server:", shlex.join(command), f"(log {log})")
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
    os.close(handle)  # the server holds its own copy
    return process, f"http://127.0.0.1:{port}", log


def wait_ready(url: str, timeout: float, process: subprocess.Popen | None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            sys.exit(f"the server exited with code {process.returncode} before it was ready")
        try:
            if requests.get(url + "/readyz", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    sys.exit(f"{url}/readyz did not answer 200 within {timeout:.0f} s")


def warm_up(url: str, args: argparse.Namespace) -> None:
    """One job before the clock starts: a fresh process's first forward pays one-time costs."""
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    body = {"prompt": prompt(), "size": args.size, "steps": args.steps}
    try:
        r = requests.post(url + "/v1/generations", json=body, headers=headers, timeout=args.request_timeout)
    except requests.RequestException as error:
        sys.exit(f"the warm-up job failed: {error}")
    if r.status_code != 200:
        sys.exit(f"the warm-up job answered {r.status_code}: {r.text[:500]}")


def stop_server(process: subprocess.Popen, timeout: float) -> dict[str, Any]:
    start = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout)
        killed = False
    except subprocess.TimeoutExpired:
        process.kill()
        code, killed = process.wait(), True
    return {"exit_code": code, "seconds": round(time.monotonic() - start, 2), "killed": killed}


def summary(stats: Stats, args: argparse.Namespace, seconds: float) -> dict[str, Any]:
    def figures(values: list[float], qs: tuple[int, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {"count": len(values)}
        for q in qs:
            out[f"p{q}"] = percentile(values, q)
        out["max"] = max(values) if values else None
        return out

    rss = stats.rss
    lost_jobs = [j for j, s in stats.jobs.items() if s not in FINAL_STATUSES and s != "lost"]
    return {
        "settings": {
            "clients": args.clients,
            "minutes": args.minutes,
            "held_streams": args.held_streams,
            "held_jobs": args.held_jobs,
            "held_steps": args.held_steps,
            "half_sent": args.half_sent,
            "steps": args.steps,
            "size": args.size,
            "seconds": round(seconds, 1),
        },
        "requests": sum(stats.statuses.values()),
        "2xx": sum(n for s, n in stats.statuses.items() if 200 <= s < 300),
        "4xx": {str(s): n for s, n in sorted(stats.statuses.items()) if 400 <= s < 500},
        "5xx": stats.five_xx(),
        "5xx_samples": stats.server_errors,
        "backpressure": {str(s): n for s, n in sorted(stats.backpressure.items())},
        "by_route": {k: {str(s): n for s, n in sorted(c.items())} for k, c in sorted(stats.by_route.items())},
        "transport_errors": dict(stats.transport),
        "transport_samples": stats.transport_samples,
        "jobs_accepted": len(stats.jobs),
        "jobs": dict(Counter(stats.jobs.values())),
        "lost": len(stats.lost) + len(lost_jobs),
        "lost_samples": stats.lost[:SAMPLES_KEPT]
        + [{"what": j, "reason": "not final"} for j in lost_jobs][:SAMPLES_KEPT],
        "failed_jobs": stats.failed_jobs[:SAMPLES_KEPT],
        "failed_count": len(stats.failed_jobs),
        "unfinished_operations": stats.unfinished,
        "unexpected_answers": dict(stats.surprises),
        "unexpected_samples": stats.surprise_samples,
        "streams": dict(stats.streams),
        "held_open": {
            "min": min(stats.held_samples, default=None),
            "mean": round(sum(stats.held_samples) / len(stats.held_samples), 1)
            if stats.held_samples
            else None,
        },
        "latency_seconds": {k: figures(v, (50, 95)) for k, v in sorted(stats.latency.items())},
        "health_seconds": {k: figures(v, (50, 99)) for k, v in sorted(stats.health.items())},
        "health_status": {k: {str(s): n for s, n in c.items()} for k, c in stats.health_status.items()},
        "health_timeouts": dict(stats.health_timeouts),
        "health_errors": dict(stats.health_errors),
        "half_sent": dict(stats.half_sent),
        "memory_bytes": {
            "start": rss[0] if rss else None,
            "end": rss[-1] if rss else None,
            "max": max(rss) if rss else None,
            "growth": rss[-1] - rss[0] if rss else None,
            "samples": len(rss),
        },
    }


def report(figures: dict[str, Any]) -> None:
    def ms(value: float | None) -> str:
        return "—" if value is None else f"{value * 1000:.0f} ms"

    def mib(value: int | None) -> str:
        return "—" if value is None else f"{value / 2**20:.0f} MiB"

    s = figures["settings"]
    print(
        f"\n{s['clients']} clients x {s['minutes']} min ({s['seconds']} s with the drain), "
        f"{s['held_streams']} held streams, {s['half_sent']} half-sent requests, "
        f"{s['steps']} steps at {s['size']} px"
    )
    print(f"requests sent   {figures['requests']}")
    print(f"2xx             {figures['2xx']}")
    print(f"4xx             {figures['4xx'] or 0}")
    print(f"back-pressure   {figures['backpressure'] or 0}  (429, 503 with Retry-After)")
    print(f"5xx             {figures['5xx']}")
    for sample in figures["5xx_samples"]:
        print(f"    {sample['kind']} {sample['status']}: {sample['body']}")
    print(f"transport errs  {figures['transport_errors'] or 0}")
    for sample in figures["transport_samples"]:
        print(f"    {sample}")
    print(f"jobs accepted   {figures['jobs_accepted']}  {figures['jobs']}")
    print(f"lost            {figures['lost']}")
    for sample in figures["lost_samples"]:
        print(f"    {sample['what']}: {sample['reason']}")
    print(f"failed jobs     {figures['failed_count']}  {figures['failed_jobs'] or ''}")
    print(f"unfinished ops  {figures['unfinished_operations']}")
    print(f"unexpected      {figures['unexpected_answers'] or 0}")
    for sample in figures["unexpected_samples"]:
        print("    " + sample.rstrip().replace("\n", "\n    "))
    print(f"streams         {figures['streams']}")
    if s["held_streams"]:
        held = figures["held_open"]
        print(f"held open       min {held['min']}, mean {held['mean']} of {s['held_streams']}")
    print(f"\n{'latency':<18} {'count':>6} {'p50':>9} {'p95':>9} {'max':>9}")
    for kind, f in figures["latency_seconds"].items():
        print(f"{kind:<18} {f['count']:>6} {ms(f['p50']):>9} {ms(f['p95']):>9} {ms(f['max']):>9}")
    print(f"\n{'health':<18} {'count':>6} {'p50':>9} {'p99':>9} {'max':>9} {'timeouts':>9}  statuses")
    for route, f in figures["health_seconds"].items():
        timeouts = figures["health_timeouts"].get(route, 0)
        print(
            f"{route:<18} {f['count']:>6} {ms(f['p50']):>9} {ms(f['p99']):>9} {ms(f['max']):>9} "
            f"{timeouts:>9}  {figures['health_status'].get(route)}"
        )
    for route, timeouts in figures["health_timeouts"].items():
        if route not in figures["health_seconds"]:
            print(f"{route:<18} {0:>6} {'—':>9} {'—':>9} {'—':>9} {timeouts:>9}")
    if figures["health_errors"]:
        print(f"health errors   {figures['health_errors']}")
    if figures["half_sent"]:
        print(f"half-sent       {figures['half_sent']}")
    m = figures["memory_bytes"]
    print(
        f"\nserver memory   start {mib(m['start'])}, end {mib(m['end'])}, max {mib(m['max'])}, "
        f"growth {mib(m['growth'])}"
    )
    if "shutdown" in figures:
        print(f"shutdown        {figures['shutdown']}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="a running service, e.g. http://127.0.0.1:5000")
    target.add_argument(
        "--serve", action="store_true", help="start `glide-api serve --model demo` on a free port"
    )
    parser.add_argument("--serve-args", default="", help="more flags for --serve, e.g. '--threads 64'")
    parser.add_argument("--api-key", help="sent as Authorization: Bearer KEY")
    parser.add_argument("--pid", type=int, help="the server's process id, for its memory (with --url)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument(
        "--minutes", type=float, default=1.0, help="how long clients start operations (default 1)"
    )
    parser.add_argument("--steps", type=int, default=2, help="base steps of each job (default 2)")
    parser.add_argument("--size", type=int, default=64, help="image size of each job (default 64)")
    parser.add_argument("--held-streams", type=int, default=0, help="event streams kept open the whole run")
    parser.add_argument(
        "--held-jobs", type=int, help=f"long jobs they follow (default: one per {STREAMS_PER_HELD_JOB})"
    )
    parser.add_argument("--held-steps", type=int, default=100, help="base steps of a held job (default 100)")
    parser.add_argument(
        "--half-sent", type=int, default=0, help="connections kept with half a request header sent"
    )
    parser.add_argument(
        "--health-timeout", type=float, default=5.0, help="client timeout of a probe (default 5 s)"
    )
    parser.add_argument(
        "--request-timeout", type=float, default=300.0, help="read timeout of a request (default 300 s)"
    )
    parser.add_argument(
        "--drain", type=float, default=120.0, help="seconds to let operations finish (default 120)"
    )
    parser.add_argument(
        "--no-openai-client", action="store_true", help="send every OpenAI call with requests"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args()
    args.held_jobs = args.held_jobs or -(-args.held_streams // STREAMS_PER_HELD_JOB)

    process, log = None, None
    if args.serve:
        process, url, log = start_server(args)
        pid: int | None = process.pid
    else:
        url, pid = args.url.rstrip("/"), args.pid
    stats = Stats()
    figures: dict[str, Any] = {}
    try:
        wait_ready(url, 600, process)
        warm_up(url, args)
        stop_clients, stop_background = threading.Event(), threading.Event()
        background = [threading.Thread(target=prober, args=(url, args, stats, stop_background), daemon=True)]
        if pid is not None:
            background.append(
                threading.Thread(target=memory_sampler, args=(pid, stats, stop_background), daemon=True)
            )
        if args.half_sent:
            background.append(
                threading.Thread(
                    target=half_sent, args=(url, args.half_sent, stats, stop_background), daemon=True
                )
            )

        deadline = Deadline(time.monotonic() + args.minutes * 60 + args.drain + HOLD_SECONDS)

        def client() -> Client:
            return Client(Api(url, args.api_key, stats, args.request_timeout), args, stop_clients, deadline)

        # The held streams spread evenly over the held jobs; they are open before the clock starts.
        share, extra = divmod(args.held_streams, args.held_jobs) if args.held_streams else (0, 0)
        per_job = [share + (i < extra) for i in range(args.held_jobs)] if args.held_streams else []
        workers = [
            threading.Thread(
                target=guarded,
                args=(stats, "held group", HeldGroup(client(), n, stop_clients).run),
                daemon=True,
            )
            for n in per_job
        ]
        for t in workers:
            t.start()
        holding = time.monotonic() + HOLD_SECONDS
        while stats.held_now < args.held_streams and time.monotonic() < holding:
            time.sleep(0.2)
        if stats.held_now < args.held_streams:
            print(f"only {stats.held_now} of {args.held_streams} held streams opened in {HOLD_SECONDS:.0f} s")
        t0 = time.monotonic()
        end = t0 + args.minutes * 60
        deadline.at = end + args.drain
        for t in background:
            t.start()
        clients = [threading.Thread(target=client().run, args=(i,), daemon=True) for i in range(args.clients)]
        for t in clients:
            t.start()
        workers += clients
        try:
            while True:
                stats.held_samples.append(stats.held_now)
                left = end - time.monotonic()
                if left <= 0 or stop_clients.wait(min(PROBE_SECONDS, left)):
                    break
        except KeyboardInterrupt:
            print("interrupted: draining")
        stop_clients.set()
        drain_until = time.monotonic() + args.drain
        for t in workers:
            t.join(max(0.0, drain_until - time.monotonic()))
        stats.unfinished = sum(t.is_alive() for t in workers)
        # Every accepted job not yet seen final gets one last look.
        checker = Client(
            Api(url, args.api_key, stats, args.request_timeout), args, stop_clients, deadline, openai=False
        )
        for job_id, status in list(stats.jobs.items()):
            if status not in FINAL_STATUSES and status != "lost":
                checker.poll(job_id, "final check", until=time.monotonic() + FINAL_CHECK_SECONDS)
        stop_background.set()
        for t in background:
            t.join(10)
        figures = summary(stats, args, time.monotonic() - t0)
    finally:
        if process is not None:
            figures["shutdown"] = stop_server(process, 120)
            print(f"server log: {log}")
    report(figures)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    bad = (
        figures["5xx"]
        or figures["lost"]
        or figures["failed_count"]
        or figures["transport_errors"]
        or figures["unfinished_operations"]
        or figures["unexpected_answers"]
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
