"""`glide-api serve` (waitress) and `flask --app glide_api.server run`, started as a user would."""

from __future__ import annotations

import os
import signal
import sys
import time

import requests
from processes import free_port, small_serve_command, started, started_process


def test_serve_runs_with_model_flags(small_model_dirs) -> None:
    port = free_port()
    command = small_serve_command(
        small_model_dirs, port, "--base-steps", "2", "--upsample-steps", "2", "--max-batch-size", "2"
    )
    with started(command, port, {}) as url:
        body = requests.get(
            f"{url}/image", params={"size": 64, "prompt": "hi", "batch_size": 2}, timeout=120
        ).json()
        assert body["image_size"] == 64 and len(body["seeds"]) == 2
        assert requests.get(f"{url}/v1/settings", timeout=10).json()["sizes"]["inpaint"] == []
        r = requests.get(f"{url}/image", params={"size": 64, "prompt": "hi", "batch_size": 3}, timeout=10)
        assert r.status_code == 400 and r.json()["error"]["param"] == "n"


def test_sigterm_refuses_new_jobs_at_once_and_ends_every_job_with_a_final_event(small_model_dirs) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from sse import read_events

    port = free_port()
    flags = ("--shutdown-grace", "2", "--max-steps", "1000", "--data-dir", "none")  # jobs in memory
    command = small_serve_command(small_model_dirs, port, *flags)
    with started_process(command, port, {}) as (url, process), ThreadPoolExecutor(4) as pool:
        slow = {"prompt": "long", "size": 64, "steps": "1000", "upsample_steps": "1000"}
        prefer = {"Prefer": "respond-async"}
        running = requests.post(f"{url}/v1/generations", json=slow, headers=prefer, timeout=10).json()
        queued = requests.post(
            f"{url}/v1/generations", json=slow | {"size": 32}, headers=prefer, timeout=10
        ).json()
        streams = {
            job["id"]: requests.get(f"{url}/v1/jobs/{job['id']}/events", stream=True, timeout=30)
            for job in (running, queued)
        }
        finals = {job_id: pool.submit(lambda r: list(read_events(r))[-1], r) for job_id, r in streams.items()}
        sync = pool.submit(requests.post, f"{url}/v1/generations", json=slow | {"size": 32}, timeout=30)
        while requests.get(f"{url}/v1/jobs/{running['id']}", timeout=10).json()["status"] != "running":
            time.sleep(0.1)
        time.sleep(0.5)  # the synchronous request is waiting too

        os.kill(process.pid, signal.SIGTERM)
        time.sleep(0.3)
        ready = requests.get(f"{url}/readyz", timeout=1)
        assert ready.status_code == 503 and ready.json()["stopping"] is True
        refused = requests.post(f"{url}/v1/generations", json={"prompt": "late"}, timeout=1)
        assert refused.status_code == 503 and int(refused.headers["Retry-After"]) > 0
        assert refused.json()["error"]["code"] == "shutting_down"

        for job_id, final in finals.items():
            name, data = final.result(timeout=30)
            assert name == "failed" and "server stopped" in data["message"], (job_id, name, data)
        answer = sync.result(timeout=30)
        assert answer.status_code == 503 and "server stopped" in answer.json()["error"]["message"]
        assert process.wait(timeout=30) == 0
    output = process.stdout.read()
    assert "SIGTERM received" in output and "shut down" in output, output


def test_after_kill_9_the_restarted_server_runs_the_accepted_jobs_and_serves_the_finished_ones(
    small_model_dirs, tmp_path
) -> None:
    from sse import read_events

    data = ["--data-dir", str(tmp_path / "data"), "--max-steps", "1000"]
    long = {"prompt": "long", "size": 32, "steps": "6", "seed": 5}
    queued_request = {"prompt": "queued", "size": 32, "steps": "2", "seed": 9}
    prefer = {"Prefer": "respond-async"}
    port = free_port()
    with started_process(small_serve_command(small_model_dirs, port, *data), port, {}) as (url, process):
        done = requests.post(f"{url}/v1/generations", json=queued_request | {"seed": 1}, timeout=60).json()
        running = requests.post(f"{url}/v1/generations", json=long, headers=prefer, timeout=10).json()
        queued = requests.post(
            f"{url}/v1/generations", json=queued_request, headers=prefer, timeout=10
        ).json()
        while requests.get(f"{url}/v1/jobs/{running['id']}", timeout=10).json()["progress"] is None:
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    port = free_port()
    with started_process(small_serve_command(small_model_dirs, port, *data), port, {}) as (url, _):
        images = {}
        for job in (running, queued, done):
            final = requests.get(f"{url}/v1/jobs/{job['id']}", timeout=10).json()
            while final["status"] in ("queued", "running"):
                time.sleep(0.1)
                final = requests.get(f"{url}/v1/jobs/{job['id']}", timeout=10).json()
            assert final["status"] == "succeeded", final
            image = requests.get(f"{url}/v1/jobs/{job['id']}/images/0.png", timeout=10)
            assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
            images[job["id"]] = image.content
        replay = requests.get(f"{url}/v1/jobs/{done['id']}/events", stream=True, timeout=30)
        names = [name for name, _ in read_events(replay)]
        assert names[0] == "queued" and names[-1] == "succeeded" and "progress" in names
        again = requests.post(f"{url}/v1/generations", json=long, timeout=120).json()  # uninterrupted
        rerun = requests.get(f"{url}/v1/jobs/{again['id']}/images/0.png", timeout=10).content
        assert rerun == images[running["id"]]


def test_flask_run_reads_settings_from_the_environment(small_model_dirs) -> None:
    port = free_port()
    env = {
        "GLIDE_API_BASE": str(small_model_dirs["small-base"]),
        "GLIDE_API_UPSAMPLE": "none",
        "GLIDE_API_BASE_INPAINT": "none",
        "GLIDE_API_UPSAMPLE_INPAINT": "none",
        "GLIDE_API_OFFLINE": "1",
        "GLIDE_API_BASE_STEPS": "2",
    }
    command = [sys.executable, "-m", "flask", "--app", "glide_api.server", "run", "--port", str(port)]
    with started(command, port, env) as url:
        job = requests.post(f"{url}/v1/generations", json={"prompt": "x"}, timeout=120).json()
        assert job["status"] == "succeeded" and job["request"]["size"] == 32


def test_serve_with_text_to_image_folders_is_ready_offline_while_inpainting_is_missing(
    small_model_dirs, tmp_path
) -> None:
    """The default inpainting models cannot be had offline: text-to-image is served all the same."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "glide_api.cli",
        "serve",
        "--port",
        str(port),
        "--base",
        str(small_model_dirs["small-base"]),
        "--upsample",
        str(small_model_dirs["small-upsample"]),
        "--base-steps",
        "2",
    ]
    env = {"GLIDE_API_OFFLINE": "1", "GLIDE_API_CACHE": str(tmp_path / "empty-cache")}
    with started(command, port, env) as url:
        inpainting = requests.get(f"{url}/readyz", timeout=10).json()["capabilities"]["inpaint"]
        assert inpainting["state"] == "missing"
        assert inpainting["command"] == "glide-api download base-inpaint upsample-inpaint"
        job = requests.post(f"{url}/v1/generations", json={"prompt": "x", "size": 32}, timeout=60)
        assert job.status_code == 200 and job.json()["status"] == "succeeded", job.text
        r = requests.post(f"{url}/v1/inpaint", data={"prompt": "x"}, files={"image": b"x"}, timeout=10)
        assert r.status_code == 503 and "base_inpaint.pt" in r.json()["error"]["message"]
