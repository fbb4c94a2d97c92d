"""`glide-api serve` (gunicorn) and `flask --app glide_api.server run`, started as a user would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def started(command: list[str], port: int, env: dict[str, str]) -> Iterator[str]:
    process = subprocess.Popen(
        command,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready in 90 s"
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def test_serve_runs_under_gunicorn_with_model_flags(small_model_dirs) -> None:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "glide_api.cli",
        "serve",
        "--port",
        str(port),
        "--offline",
        "--base",
        str(small_model_dirs["small-base"]),
        "--upsample",
        str(small_model_dirs["small-upsample"]),
        "--base-inpaint",
        "none",
        "--upsample-inpaint",
        "none",
        "--base-steps",
        "2",
        "--upsample-steps",
        "2",
        "--max-batch-size",
        "2",
    ]
    with started(command, port, {}) as url:
        body = requests.get(
            f"{url}/image", params={"size": 64, "prompt": "hi", "batch_size": 2}, timeout=120
        ).json()
        assert body["image_size"] == 64 and len(body["seeds"]) == 2
        assert requests.get(f"{url}/v1/settings", timeout=10).json()["sizes"]["inpaint"] == []
        r = requests.get(f"{url}/image", params={"size": 64, "prompt": "hi", "batch_size": 3}, timeout=10)
        assert r.status_code == 400 and r.json()["error"]["param"] == "n"


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
