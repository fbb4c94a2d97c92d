"""A fleet of real processes on a real redis-server: `glide-api serve --queue` replicas and
`glide-api worker`s on the small models, with workers, replicas and Redis killed mid-run."""

from __future__ import annotations

import os
import signal
import time

import requests
from processes import free_port, small_worker_command, started_process, started_worker, stop
from sse import read_events

PREFER_ASYNC = {"Prefer": "respond-async"}
STEPS = {"size": 64, "steps": "12", "upsample_steps": "6"}


def replica_command(queue: str, port: int, *flags: str) -> list[str]:
    import sys

    return [
        sys.executable,
        "-m",
        "glide_api.cli",
        "-v",
        "serve",
        "--queue",
        queue,
        "--port",
        str(port),
        *flags,
    ]


def until(check, *, within: float, what: str):
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        time.sleep(0.1)


def workers(url: str) -> dict[str, dict]:
    return {w["id"]: w for w in requests.get(f"{url}/v1/workers", timeout=5).json()["workers"]}


def final(url: str, job_id: str, *, within: float = 120) -> dict:
    def done() -> dict | None:
        job = requests.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()
        return job if job["status"] not in ("queued", "running") else None

    return until(done, within=within, what=f"job {job_id} finished")


def submit(url: str, body: dict) -> str:
    answer = requests.post(f"{url}/v1/generations", json={**STEPS, **body}, headers=PREFER_ASYNC, timeout=10)
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def kill(process) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def test_two_replicas_and_two_workers_lose_no_job_when_a_worker_and_a_replica_are_killed(
    redis_server, small_model_dirs
) -> None:
    queue = redis_server.url
    worker_flags = ("--claim-timeout", "2", "--max-steps", "1000")
    a_port, b_port, c_port = free_port(), free_port(), free_port()
    with (
        started_worker(
            small_worker_command(small_model_dirs, queue, "--worker-id", "w1", *worker_flags)
        ) as w1,
        started_worker(
            small_worker_command(small_model_dirs, queue, "--worker-id", "w2", *worker_flags)
        ) as w2,
        started_process(replica_command(queue, a_port, "--max-steps", "1000"), a_port, {}) as (a, _),
        started_process(replica_command(queue, b_port, "--max-steps", "1000"), b_port, {}) as (b, b_process),
    ):
        until(lambda: set(workers(a)) == {"w1", "w2"}, within=90, what="both workers live")
        long = submit(a, {"prompt": "the long one", "seed": 11, "steps": "80"})
        jobs = {long: "the long one"}
        for i in range(4):
            prompt = f"job {i}"
            jobs[submit(a if i % 2 else b, {"prompt": prompt, "seed": i})] = prompt
        # kill -9 whichever worker runs the long job, mid-job, and one replica
        runner = until(
            lambda: next((w for w, info in workers(a).items() if long in info["current_jobs"]), None),
            within=60,
            what="a worker runs the long job",
        )
        until(
            lambda: (
                (requests.get(f"{a}/v1/jobs/{long}", timeout=5).json()["progress"] or {}).get("step", 0) > 2
            ),
            within=60,
            what="the long job is under way",
        )
        kill({"w1": w1, "w2": w2}[runner])
        survivor = ({"w1", "w2"} - {runner}).pop()
        kill(b_process)
        with started_process(replica_command(queue, c_port), c_port, {}) as (c, _):
            images = {}
            for job_id in jobs:
                done = final(a, job_id)
                assert done["status"] == "succeeded", done
                for url in (a, c):  # every replica serves its events and its image
                    names = [
                        name
                        for name, _ in read_events(
                            requests.get(f"{url}/v1/jobs/{job_id}/events", stream=True, timeout=30)
                        )
                    ]
                    assert names[-1] == "succeeded" and names.count("succeeded") == 1, names
                    png = requests.get(f"{url}/v1/jobs/{job_id}/images/0.png", timeout=10)
                    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
                    images.setdefault(job_id, png.content)
                    assert png.content == images[job_id]
            assert set(workers(c)) == {survivor}  # the killed one is gone from the list
            # The same request and seed on another worker process makes the same bytes: a fresh
            # worker replaces the survivor (which leaves gracefully) and runs it again.
            w3_command = small_worker_command(small_model_dirs, queue, "--worker-id", "w3", *worker_flags)
            with started_worker(w3_command):
                until(lambda: "w3" in workers(c), within=90, what="w3 is live")
                stop({"w1": w1, "w2": w2}[survivor])
                until(lambda: set(workers(c)) == {"w3"}, within=30, what="only w3 is left")
                again = submit(c, {"prompt": "the long one", "seed": 11, "steps": "80"})
                assert final(c, again)["status"] == "succeeded"
                rerun = requests.get(f"{c}/v1/jobs/{again}/images/0.png", timeout=10).content
            assert rerun == images[long]


def test_a_redis_restart_loses_no_accepted_job_and_meanwhile_the_api_answers_503(
    redis_server, small_model_dirs
) -> None:
    queue = redis_server.url
    port = free_port()
    worker = small_worker_command(small_model_dirs, queue, "--worker-id", "w1", "--max-steps", "1000")
    with (
        started_worker(worker),
        started_process(replica_command(queue, port, "--max-steps", "1000"), port, {}) as (url, _),
    ):
        until(lambda: "w1" in workers(url), within=90, what="the worker is live")
        jobs = [
            submit(url, {"prompt": f"before the restart {i}", "seed": i, "steps": "40"}) for i in range(3)
        ]
        until(
            lambda: requests.get(f"{url}/v1/jobs/{jobs[0]}", timeout=5).json()["status"] == "running",
            within=30,
            what="the first job runs",
        )
        redis_server.stop()  # SIGTERM: the AOF is complete
        answer = requests.get(f"{url}/v1/jobs/{jobs[1]}", timeout=15)
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "store_unavailable", (
            answer.text
        )
        assert int(answer.headers["Retry-After"]) >= 1
        refused = requests.post(
            f"{url}/v1/generations", json={"prompt": "while down"}, headers=PREFER_ASYNC, timeout=15
        )
        assert refused.status_code == 503, refused.text
        ready = requests.get(f"{url}/readyz", timeout=15)
        assert ready.status_code == 503
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
        time.sleep(2)
        redis_server.start()
        for job_id in jobs:
            assert final(url, job_id)["status"] == "succeeded"
        after = submit(url, {"prompt": "after the restart", "seed": 1})
        assert final(url, after)["status"] == "succeeded"
