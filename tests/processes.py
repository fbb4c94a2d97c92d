"""Real `glide-api` processes for tests: started as a user would, ready when /readyz says so."""

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
    with started_process(command, port, env) as (url, _):
        yield url


@contextmanager
def started_process(
    command: list[str], port: int, env: dict[str, str]
) -> Iterator[tuple[str, subprocess.Popen]]:
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
        yield url, process
    finally:
        stop(process)


def small_model_flags(small_model_dirs) -> list[str]:
    """The small text-to-image models (no inpainting), offline."""
    return [
        "--offline",
        "--base",
        str(small_model_dirs["small-base"]),
        "--upsample",
        str(small_model_dirs["small-upsample"]),
        "--base-inpaint",
        "none",
        "--upsample-inpaint",
        "none",
    ]


def small_serve_command(small_model_dirs, port: int, *flags: str) -> list[str]:
    """`glide-api serve` on the small text-to-image models (no inpainting), offline."""
    return [
        sys.executable,
        "-m",
        "glide_api.cli",
        "serve",
        "--port",
        str(port),
        *small_model_flags(small_model_dirs),
        *flags,
    ]


def small_worker_command(small_model_dirs, queue: str, *flags: str) -> list[str]:
    """`glide-api worker` of the fleet on `queue`, on the small text-to-image models."""
    return [
        sys.executable,
        "-m",
        "glide_api.cli",
        "-v",
        "worker",
        "--queue",
        queue,
        *small_model_flags(small_model_dirs),
        *flags,
    ]


@contextmanager
def started_worker(command: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """A worker process (it has no HTTP port: a test waits for it in a replica's /v1/workers)."""
    process = subprocess.Popen(
        command,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the process group, then SIGKILL after 30 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
