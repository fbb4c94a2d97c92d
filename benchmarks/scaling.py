"""Scaling on one Redis: images per minute with 1 and 2 worker processes, and what Redis adds.

    python benchmarks/scaling.py                       # the demo models, 2 rounds of each side
    python benchmarks/scaling.py --rounds 3 --jobs 16 --steps 20 --json figures.json

Starts its own redis-server (a temporary folder, a free port), one API replica
(`glide-api serve --queue`) and `glide-api worker` processes on the shipped demo models, each
worker with one torch thread (OMP_NUM_THREADS=1), and, for comparison, one single-process server
(`glide-api serve --data-dir none`, one thread too). Measured, alternating the sides in every round:

- throughput: `--jobs` one-image jobs submitted at once (asynchronous), timed from the first submit
  to the last success, with 1 worker and with 2 workers (workers are started before and stopped
  after each round, out of the timing);
- admission: the latency of an asynchronous `POST /v1/generations` (202) on the replica and on the
  single-process server, while nothing runs (the 1-worker side's jobs have finished);
- events: from a job's `started_at` (stamped by the process that started it) to the moment its
  `started` event reaches an SSE client of the replica, and of the single-process server;
- claim: after `kill -9` of the worker running a job, the seconds until another worker starts it
  again, beyond `--claim-timeout`.

The figures are ratios and percentiles of one run; absolute times depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
ASYNC = {"Prefer": "respond-async"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "glide_api.cli", *args]


def spawn(command: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        env={**os.environ, **ONE_THREAD},
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def until(check: Any, within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while not (value := check()):
        if time.monotonic() > deadline:
            raise SystemExit(f"scaling: not within {within} s: {what}")
        time.sleep(0.05)
    return value


def ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/readyz", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def live_workers(url: str) -> dict[str, dict]:
    return {w["id"]: w for w in requests.get(f"{url}/v1/workers", timeout=5).json()["workers"]}


@contextmanager
def workers(queue: str, replica: str, count: int, folder: Path, *flags: str):
    names = [f"bench-{i}-{time.monotonic_ns()}" for i in range(count)]
    processes = {
        name: spawn(
            cli("worker", "--queue", queue, "--model", "demo", "--worker-id", name, *flags),
            folder / f"{name}.log",
        )
        for name in names
    }
    try:
        until(lambda: set(names) <= set(live_workers(replica)), 120, f"{count} workers live")
        yield processes
    finally:
        for process in processes.values():
            stop(process)


def job_body(i: int, steps: int) -> dict:
    return {"prompt": f"a red circle {i}", "size": 64, "steps": str(steps), "upsample_steps": "2", "seed": i}


def submit(url: str, body: dict) -> tuple[str, float]:
    start = time.perf_counter()
    answer = requests.post(f"{url}/v1/generations", json=body, headers=ASYNC, timeout=30)
    elapsed = time.perf_counter() - start
    if answer.status_code != 202:
        raise SystemExit(f"scaling: submit answered {answer.status_code}: {answer.text}")
    return answer.json()["id"], elapsed


def wait_all(url: str, ids: list[str], within: float = 3600) -> None:
    for job_id in ids:
        job = until(
            lambda job_id=job_id: (
                j
                if (j := requests.get(f"{url}/v1/jobs/{job_id}", timeout=10).json())["status"]
                not in ("queued", "running")
                else None
            ),
            within,
            f"job {job_id} finished",
        )
        if job["status"] != "succeeded":
            raise SystemExit(f"scaling: job {job_id} {job['status']}: {job.get('error')}")


def throughput(url: str, jobs: int, steps: int, offset: int) -> float:
    """Images per minute for `jobs` one-image jobs submitted at once."""
    start = time.perf_counter()
    ids: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        job_id, _ = submit(url, job_body(offset + i, steps))
        with lock:
            ids.append(job_id)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_all(url, ids)
    return jobs / (time.perf_counter() - start) * 60


def admission(url: str, samples: int, steps: int, offset: int) -> list[float]:
    """Seconds of each asynchronous submit, one at a time (jobs run meanwhile, out of the timing)."""
    ids, times = [], []
    for i in range(samples):
        job_id, elapsed = submit(url, job_body(offset + i, steps))
        ids.append(job_id)
        times.append(elapsed)
    wait_all(url, ids)
    return times


def event_delay(url: str, steps: int, offset: int) -> float:
    """Seconds from a job's `started_at` to its `started` event reaching an SSE client."""
    job_id, _ = submit(url, job_body(offset, steps))
    with requests.get(f"{url}/v1/jobs/{job_id}/events", stream=True, timeout=120) as stream:
        for line in stream.iter_lines(decode_unicode=True):
            if line == "event: started":
                seen = time.time()
                break
    wait_all(url, [job_id])
    started = requests.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()["started_at"]
    return max(0.0, seen - started)


def claim_delay(queue: str, replica: str, folder: Path, claim_timeout: float, offset: int) -> float:
    """Seconds beyond `claim_timeout` until a killed worker's job starts again elsewhere."""
    flags = ("--claim-timeout", str(claim_timeout))
    with workers(queue, replica, 2, folder, *flags) as processes:
        job_id, _ = submit(replica, job_body(offset, 400))
        runner = until(
            lambda: next(
                (w for w, info in live_workers(replica).items() if job_id in info["current_jobs"]), None
            ),
            60,
            "a worker runs the job",
        )
        stop(processes[runner], signal.SIGKILL)
        killed = time.time()
        events = requests.get(f"{replica}/v1/jobs/{job_id}/events", stream=True, timeout=600)
        starts = 0
        for line in events.iter_lines(decode_unicode=True):
            if line == "event: started":
                starts += 1
                if starts == 2:
                    restarted = time.time()
                    break
        events.close()
        requests.post(f"{replica}/v1/jobs/{job_id}/cancel", timeout=10)
    return restarted - killed - claim_timeout


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds; each runs both sides (default 2)")
    parser.add_argument("--jobs", type=int, default=12, help="jobs per throughput run (default 12)")
    parser.add_argument("--steps", type=int, default=20, help="base steps per job (default 20)")
    parser.add_argument("--admissions", type=int, default=20, help="submits timed per side and round")
    parser.add_argument("--claim-timeout", type=float, default=3.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise SystemExit("scaling: redis-server is not installed (apt-get install redis-server)")

    folder = Path(tempfile.mkdtemp(prefix="glide-scaling-"))
    redis_port, replica_port, single_port = free_port(), free_port(), free_port()
    queue = f"redis://127.0.0.1:{redis_port}/0"
    redis = subprocess.Popen(
        [redis_server, "--port", str(redis_port), "--dir", str(folder), "--appendonly", "yes", "--save", ""],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    common = ("--max-steps", "1000", "--max-queue", str(max(64, args.jobs * 2)))
    replica = spawn(
        cli("serve", "--queue", queue, "--port", str(replica_port), *common), folder / "replica.log"
    )
    single = spawn(
        cli("serve", "--model", "demo", "--data-dir", "none", "--port", str(single_port), *common),
        folder / "single.log",
    )
    replica_url, single_url = f"http://127.0.0.1:{replica_port}", f"http://127.0.0.1:{single_port}"
    rates: dict[int, list[float]] = {1: [], 2: []}
    admit: dict[str, list[float]] = {"redis": [], "memory": []}
    events: dict[str, list[float]] = {"redis": [], "memory": []}
    claims: list[float] = []
    try:
        until(lambda: ready(single_url), 180, "the single-process server is ready")
        offset = 0
        for r in range(args.rounds):
            for count in (1, 2) if r % 2 == 0 else (2, 1):
                with workers(queue, replica_url, count, folder):
                    until(lambda: ready(replica_url), 60, "the replica is ready")
                    throughput(replica_url, 2, args.steps, offset)  # warm-up
                    rates[count].append(throughput(replica_url, args.jobs, args.steps, offset + 2))
                    offset += args.jobs + 2
                    if count == 1:
                        for side, url in (("redis", replica_url), ("memory", single_url))[
                            :: 1 if r % 2 == 0 else -1
                        ]:
                            admit[side] += admission(url, args.admissions, 2, offset)
                            events[side].append(event_delay(url, 2, offset + args.admissions))
                            offset += args.admissions + 1
                print(f"round {r + 1}: {count} worker(s): {rates[count][-1]:.1f} images/min", flush=True)
            claims.append(claim_delay(queue, replica_url, folder, args.claim_timeout, offset))
            offset += 1
    finally:
        for process in (replica, single):
            stop(process)
        stop(redis)
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    figures = {
        "images_per_minute": {"1 worker": one, "2 workers": two, "ratio": two / one},
        "admission_ms": {
            side: {"p50": percentile(t, 0.5) * 1000, "p95": percentile(t, 0.95) * 1000}
            for side, t in admit.items()
        },
        "event_delay_ms": {side: statistics.median(t) * 1000 for side, t in events.items()},
        "claim_beyond_timeout_s": {"median": statistics.median(claims), "max": max(claims)},
        "settings": {
            "jobs": args.jobs,
            "steps": args.steps,
            "claim_timeout": args.claim_timeout,
            "rounds": args.rounds,
        },
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
