"""The running service behind the HTTP app: models loading in the background, then the engine.

The server starts answering at once; `/readyz` says "not ready" (and why) until the models are
loaded. Offline with nothing cached, it stays up and names the missing files and the command
that fetches them.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import Any

from ..config import ServiceConfig
from ..download import human_size
from ..engine import Engine, EngineConfig, JobResult
from ..errors import ModelNotReady, WeightsNotFound
from ..models.official_files import cached_models
from ..models.registry import CHECKPOINTS, REGISTRY, TOKENIZER_FILES
from ..models.weights_source import WeightsSource
from ..pipeline.glide_pipeline import GlidePipeline
from .capacity import Capacity
from .generation_request import StepDefaults

logger = logging.getLogger(__name__)

# After the last job ended, how long open streams and waiting requests get to send its final event.
STREAM_DRAIN_SECONDS = 5.0


class Service:
    """Holds the configuration, the loading status and (once ready) the engine."""

    def __init__(self, config: ServiceConfig, *, pipeline: GlidePipeline | None = None) -> None:
        self.config = config
        self.step_defaults = StepDefaults(base=config.base_steps, upsample=config.upsample_steps)
        self.streams = Capacity("max_open_streams", config.max_open_streams, what="event streams")
        self.sync_waits = Capacity("max_sync_waits", config.max_sync_waits, what="synchronous requests")
        self.stopping = False
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._status: dict[str, Any] = {
            "stage": "starting",
            "reason": "the models are loading",
            "missing": [],
            "command": None,
            "failed": False,
        }
        self._loader: threading.Thread | None = None
        self.started_at = time.time()
        if pipeline is not None:
            self._start_engine(pipeline)

    # ---- loading ------------------------------------------------------------------------------

    def start_loading(self) -> None:
        """Load the configured models in a background thread (no-op when already loaded or loading)."""
        with self._lock:
            if self._engine is not None or self._loader is not None:
                return
            self._loader = threading.Thread(target=self._load, name="glide-model-loader", daemon=True)
            self._loader.start()

    def _load(self) -> None:
        c = self.config
        source = WeightsSource.from_env(offline=c.offline, cache=c.cache_dir)
        missing = self._missing_files() if source.offline else []
        if missing:
            self._set_status(
                stage="missing",
                failed=True,
                missing=missing,
                reason="model files are not in the cache and downloads are off",
                command=f"glide-api download {' '.join(self._official_specs())}",
            )
            logger.error(
                "not ready: missing %s; fetch them with: %s", ", ".join(missing), self._status["command"]
            )
            return

        def on_load(role: str, spec: str) -> None:
            self._set_status(stage=f"loading {role}", reason=f"loading the {role} model ({spec})")

        def on_download(name: str, done: int, total: int | None) -> None:
            with self._lock:
                self._status["reason"] = f"downloading {name}: {human_size(done)}" + (
                    f" of {human_size(total)}" if total else ""
                )
                self._status["progress"] = done / total if total else None

        try:
            pipeline = GlidePipeline.from_selection(
                c, source=dataclasses.replace(source, on_progress=on_download), on_load=on_load
            )
        except WeightsNotFound as e:
            self._set_status(
                stage="missing",
                failed=True,
                reason=str(e),
                missing=self._missing_files(),
                command=f"glide-api download {' '.join(self._official_specs())}",
            )
            logger.error("not ready: %s", e)
            return
        except Exception as e:  # any failure must leave the server up and saying why
            self._set_status(stage="failed", failed=True, reason=f"loading the models failed: {e}")
            logger.exception("not ready: loading the models failed")
            return
        self._start_engine(pipeline)

    def _start_engine(self, pipeline: GlidePipeline) -> None:
        c = self.config
        engine = Engine(
            pipeline,
            EngineConfig(
                max_queue=c.max_queue,
                max_batch_images=c.max_batch_images,
                job_timeout=c.job_timeout,
                keep_finished=c.keep_finished,
                keep_finished_bytes=c.keep_finished_bytes,
                preview_every=c.preview_every,
            ),
            on_success=self._save_images,
        )
        engine.start()
        with self._lock:
            self._engine = engine
            self._status = {"stage": "ready", "reason": None, "missing": [], "command": None, "failed": False}
        models = pipeline.describe()["models"]
        logger.info("ready: %s", ", ".join(f"{role} {m['name']}" for role, m in models.items()))

    def _set_status(self, **status: Any) -> None:
        with self._lock:
            self._status = {
                "stage": "loading",
                "reason": None,
                "missing": [],
                "command": None,
                "failed": False,
            } | status

    def _official_specs(self) -> list[str]:
        return [s for s in self.config.specs().values() if s in CHECKPOINTS]

    def _missing_files(self) -> list[str]:
        """Files the configured models need that are not on disk (official names and folders)."""
        source = WeightsSource.from_env(cache=self.config.cache_dir)
        cache = source.cache
        cached = {c.name for c in cached_models(source=source) if not c.partial}
        missing = []
        specs = self.config.specs()
        for spec in specs.values():
            if spec is None:
                continue
            if spec in CHECKPOINTS:
                if spec not in cached:
                    missing.append(str(cache / REGISTRY[spec].filename))
            elif not Path(spec).is_dir():
                missing.append(spec)
        if any(spec in CHECKPOINTS for spec in specs.values()):
            missing += [str(cache / REGISTRY[n].filename) for n in TOKENIZER_FILES if n not in cached]
        return missing

    # ---- state --------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._engine is not None

    @property
    def engine(self) -> Engine:
        """The engine; `ModelNotReady` (HTTP 503) while the models load or after loading failed."""
        engine = self._engine
        if engine is None:
            status = self.readiness()
            raise ModelNotReady(status["reason"], retry_after=30 if status.get("failed") else 5)
        return engine

    def readiness(self) -> dict[str, Any]:
        with self._lock:
            status = dict(self._status)
        if self.stopping:
            return {
                "ready": False,
                "stopping": True,
                "reason": "the server is shutting down",
                "missing": [],
                "command": None,
                "failed": False,
                "loading": None,
            }
        if self._engine is not None:
            return {"ready": True}
        return {
            "ready": False,
            "reason": status["reason"],
            "missing": status["missing"],
            "command": status["command"],
            "failed": status["failed"],
            "loading": {"stage": status["stage"], "progress": status.get("progress")},
        }

    def _save_images(self, job_id: str, result: JobResult) -> None:
        """Write a finished job's images to `image_dir` under server-chosen names (never user text)."""
        if not self.config.image_dir:
            return
        folder = Path(self.config.image_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(result.images):
            (folder / f"{job_id}-{i}.png").write_bytes(image.png)

    def shutdown(self, *, grace: float, drain: float = STREAM_DRAIN_SECONDS) -> None:
        """Stop serving jobs: readiness says so at once and new jobs get 503; the running batch may
        finish within `grace` seconds; every job left then ends with a final event saying the server
        stopped, which open streams and waiting requests get (within `drain` seconds) before this
        returns. Idempotent."""
        with self._lock:
            self.stopping = True
            engine = self._engine
        logger.info("shutting down: new jobs are refused; the running batch has %g s to finish", grace)
        if engine is not None:
            engine.close(grace=grace, timeout=drain)
        for held in (self.streams, self.sync_waits):
            if not held.wait_empty(drain):
                logger.warning("shutting down: %d %s still open after %g s", len(held), held.what, drain)
        logger.info("shut down")

    def close(self) -> None:
        self.shutdown(grace=0)
