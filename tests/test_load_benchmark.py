"""benchmarks/load.py keeps working against the real server (a few seconds of it, not a measurement)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import running

ROOT = Path(__file__).resolve().parents[1]


def test_load_script_drives_every_api_with_held_and_half_sent_connections_and_finds_nothing_lost(
    small_pipeline, tmp_path
) -> None:
    from glide_api.config import ServiceConfig
    from glide_api.server import create_app

    config = ServiceConfig(base_steps="2", max_steps=20, max_queue=8)
    figures_file = tmp_path / "figures.json"
    with running(create_app(config, pipeline=small_pipeline)) as url:
        run = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "load.py"), "--url", url, "--clients", "7",
             "--minutes", "0.01", "--size", "32", "--held-streams", "2", "--held-steps", "20",
             "--half-sent", "2", "--drain", "60", "--json", str(figures_file), "--pid", str(os.getpid())],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    figures = json.loads(figures_file.read_text())
    assert figures["2xx"] > 0
    routes = {"legacy_image", "v1_sync", "v1_submit", "events", "openai", "openai_client", "openai_stream"}
    assert routes <= set(figures["by_route"])  # 7 clients: each starts with another kind
    assert figures["5xx"] == 0 and figures["lost"] == 0 and figures["jobs_accepted"] > 0
    assert figures["health_seconds"]["/healthz"]["count"] > 0
    assert figures["held_open"]["mean"] >= 1.5 and figures["half_sent"]["opened"] >= 2
    assert figures["jobs"].get("cancelled", 0) >= 1  # the held job, cancelled at the end
    assert figures["memory_bytes"]["max"] > 0  # this process is the server
    assert "lost            0" in run.stdout and "/readyz" in run.stdout
