"""Shared fixtures: the golden small models as model folders, and a pipeline built from them."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# The safety net for what runs outside a test function (module-scoped servers, which pass
# data_dir="none" or their own folder): the platform's user data folder is never the real one.
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="glide-api-tests-data-")


@pytest.fixture(autouse=True)
def own_data_dir(tmp_path_factory, monkeypatch) -> None:
    """No test writes to the real user data folder, and no two tests share a data dir: the default
    `data_dir` (the platform's user data folder, from XDG_DATA_HOME) and GLIDE_API_DATA_DIR point
    into a fresh temporary folder for each test (subprocesses inherit them)."""
    folder = tmp_path_factory.mktemp("data-home")
    monkeypatch.setenv("XDG_DATA_HOME", str(folder))
    monkeypatch.setenv("GLIDE_API_DATA_DIR", str(folder / "glide-api"))


@pytest.fixture(scope="session")
def small_model_dirs(tmp_path_factory) -> dict[str, Path]:
    from small_models import write_small_model_folders

    return write_small_model_folders(tmp_path_factory.mktemp("small-models"))


@pytest.fixture(scope="session")
def small_pipeline(small_model_dirs):
    """base 32 px + upsampler 64 px (+ both inpainting twins), CPU, float32, loaded once."""
    from glide_api.models.weights_source import WeightsSource
    from glide_api.pipeline.glide_pipeline import GlidePipeline

    d = {name: str(path) for name, path in small_model_dirs.items()}
    return GlidePipeline.load(
        base=d["small-base"],
        upsample=d["small-upsample"],
        base_inpaint=d["small-base-inpaint"],
        upsample_inpaint=d["small-upsample-inpaint"],
        device="cpu",
        precision="fp32",
        source=WeightsSource.from_env(offline=True),
    )


@contextmanager
def running(app) -> Iterator[str]:
    """Serve `app` over real HTTP on 127.0.0.1 (a free port) with the production server, in a thread;
    yields its base URL. Leaving shuts it down as SIGTERM would (without the grace period)."""
    import dataclasses

    from glide_api.server.production import Server

    config = app.extensions["glide_api"].config
    server = Server(app, dataclasses.replace(config, host="127.0.0.1", port=0))
    thread = threading.Thread(target=server.run, name="test-http", daemon=True)
    thread.start()
    try:
        yield server.url
    finally:
        server.stop(grace=0)
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server_url(small_pipeline) -> Iterator[str]:
    """The real app with the small models, default settings, over HTTP."""
    from glide_api.config import ServiceConfig
    from glide_api.server import create_app

    config = ServiceConfig(max_queue=8, data_dir="none")
    with running(create_app(config, pipeline=small_pipeline)) as url:
        yield url


@contextmanager
def _redis(tmp_path_factory) -> Iterator[object]:
    from redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def redis_server(tmp_path_factory):
    """A fresh real redis-server (AOF on) for one test; stopped after it."""
    with _redis(tmp_path_factory) as server:
        yield server


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory):
    """A real redis-server shared by a module's tests."""
    with _redis(tmp_path_factory) as server:
        yield server
