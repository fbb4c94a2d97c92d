"""The running service behind the HTTP app: models loading in the background, then the engine.

The server starts answering at once. The models load per capability, text-to-image first, then
inpainting (`TASK_ROLES`): the engine starts with the first capability whose models are loaded and
the other's models join its pipeline once they are (`GlidePipeline.load_more`), so text-to-image is
served while the inpainting models still load, or cannot be had. `readiness()` (`/readyz`) says
per capability whether it is ready, loading, missing (the files, and the one command that fetches
them), failed or off (configured "none"). Offline with nothing cached, the server stays up and
says what is missing and that the demo models work offline.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from ..config import ServiceConfig
from ..download import human_size
from ..engine import Engine, EngineConfig, JobResult, JobStore, open_durable_store
from ..engine.fleet import Fleet
from ..engine.idempotency_keys import IdempotencyKeys, open_idempotency_keys
from ..engine.redis_idempotency import RedisIdempotencyKeys
from ..errors import InvalidParameter, ModelNotReady, StoreUnavailable, WeightsNotFound
from ..model_selection import TASK_CAPABILITY, TASK_LABELS, TASK_ROLES, demo_advice
from ..models.official_files import MissingWeights, missing_weights
from ..models.weights_source import WeightsSource
from ..pipeline.glide_pipeline import GlidePipeline
from .capacity import Capacity
from .generation_request import StepDefaults
from .job_webhooks import JobWebhooks

logger = logging.getLogger(__name__)

# After the last job ended, how long open streams and waiting requests get to send its final event.
STREAM_DRAIN_SECONDS = 5.0

# Seconds a client is told to wait (Retry-After) for a capability that is loading, or stuck.
RETRY_LOADING, RETRY_STUCK = 5, 30


def engine_config(config: ServiceConfig) -> EngineConfig:
    """The engine's limits from the service's settings (its own engine's, or a fleet's)."""
    return EngineConfig(
        max_queue=config.max_queue,
        max_batch_images=config.max_batch_images,
        job_timeout=config.job_timeout,
        keep_finished=config.keep_finished,
        keep_finished_bytes=config.keep_finished_bytes,
        keep_finished_seconds=config.keep_finished_seconds,
        preview_every=config.preview_every,
    )


def _capability(state: str, **fields: Any) -> dict[str, Any]:
    """One capability's status, always with the same keys."""
    empty = {"reason": None, "models": {}, "missing": [], "command": None, "advice": None, "progress": None}
    return {"state": state, **empty, **fields}


class Service:
    """Holds the configuration, the loading status per capability and (once one is ready) the engine."""

    def __init__(self, config: ServiceConfig, *, pipeline: GlidePipeline | None = None) -> None:
        self.config = config
        self.step_defaults = StepDefaults(base=config.base_steps, upsample=config.upsample_steps)
        self.streams = Capacity("max_open_streams", config.max_open_streams, what="event streams")
        self.sync_waits = Capacity("max_sync_waits", config.max_sync_waits, what="synchronous requests")
        self.stopping = False
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._loader: threading.Thread | None = None
        self.started_at = time.time()
        self._specs: dict[str, dict[str, str | None]] = {}  # per capability: what each role loads
        # Per capability whose files are missing: what is missing, and the line that says so.
        self._missed: dict[str, tuple[MissingWeights, str]] = {}
        self.fleet: Fleet | None = None  # an API replica's part in a fleet (config.queue)
        self.idempotency: IdempotencyKeys
        self._store: JobStore | None = None
        if config.queue is not None:  # its workers load the models; it loads none
            self.webhooks = JobWebhooks(config)
            self.fleet = Fleet.replica(config.queue, engine_config(config), on_change=self.webhooks.changed)
            self._engine = self.fleet.engine
            self.step_defaults = StepDefaults(
                base=config.base_steps, upsample=config.upsample_steps, shared=self.fleet.store.link
            )
            self.idempotency = RedisIdempotencyKeys(self.fleet.store.link, ttl=config.idempotency_ttl)
            self._capabilities = {}
            logger.info(
                "jobs are shared through %s (an API replica: workers run them)", self.fleet.store.link.where
            )
            return
        # Opened now, not when the models are loaded: a data dir another process holds fails at once.
        folder = config.store_dir
        if folder is not None:
            self._store = open_durable_store(
                folder,
                keep_finished=config.keep_finished,
                keep_finished_bytes=config.keep_finished_bytes,
                keep_finished_seconds=config.keep_finished_seconds,
            )
            logger.info("jobs are kept in %s", folder)
        try:  # after the store: its lock makes the data dir, the outbox's too, this process's
            self.webhooks = JobWebhooks(config)  # a bad webhook_secret stops the server here, at start
        except Exception:
            if self._store is not None:
                self._store.close()
            raise
        if self._store is not None:
            # A status recorded just before a stop, or reached at load (a cancel asked before it),
            # was not enqueued yet; those enqueued already are not again.
            for job in self._store.jobs():
                self.webhooks.changed(job)
        # After the job store: it made the folder, and holds it against other processes.
        self.idempotency = open_idempotency_keys(
            folder, ttl=config.idempotency_ttl, max_keys=config.idempotency_max_keys
        )
        if pipeline is not None:
            self._start_engine(pipeline)
            self._capabilities = {
                task: self._loaded(task)
                if pipeline.sizes(task)
                else _capability("off", reason=f"no {TASK_ROLES[task][0]} model is loaded")
                for task in TASK_ROLES
            }
            return
        try:
            self._specs = {task: config.specs(roles) for task, roles in TASK_ROLES.items()}
        except InvalidParameter as e:  # the demo is not installed: say so, stay up
            self._capabilities = {task: _capability("failed", reason=str(e)) for task in TASK_ROLES}
            return
        self._capabilities = {}
        for task, specs in self._specs.items():
            base_role = TASK_ROLES[task][0]
            models = {role: spec for role, spec in specs.items() if spec is not None}
            if specs[base_role] is None:
                reason = f"configured off ({base_role} is 'none')"
                self._capabilities[task] = _capability("off", reason=reason)
            else:
                self._capabilities[task] = _capability("loading", reason="waiting to load", models=models)

    # ---- loading ------------------------------------------------------------------------------

    def start_loading(self) -> None:
        """Load the configured models in a background thread (no-op when already loaded or loading,
        or for an API replica)."""
        with self._lock:
            if self._engine is not None or self._loader is not None:
                return
            self._loader = threading.Thread(target=self._load, name="glide-model-loader", daemon=True)
            self._loader.start()

    def _load(self) -> None:
        """Load each capability that is to load, in `TASK_ROLES` order, on this (the loader) thread."""
        source = WeightsSource.from_env(offline=self.config.offline, cache=self.config.cache_dir)
        for task, specs in self._specs.items():
            if self._capabilities[task]["state"] == "loading":
                self._load_capability(task, specs, source)

    def _load_capability(self, task: str, specs: dict[str, str | None], source: WeightsSource) -> None:
        models = self._capabilities[task]["models"]

        def on_load(role: str, spec: str) -> None:
            self._set(
                task, _capability("loading", reason=f"loading the {role} model ({spec})", models=models)
            )

        def on_download(name: str, done: int, total: int | None) -> None:
            reason = f"downloading {name}: {human_size(done)}" + (f" of {human_size(total)}" if total else "")
            progress = done / total if total else None
            self._set(task, _capability("loading", reason=reason, models=models, progress=progress))

        try:
            missing = missing_weights(specs.values(), source=source)
            if source.offline and missing.files:
                self._missing(task, missing, None)
                return
            watched = dataclasses.replace(source, on_progress=on_download)
            engine = self._engine
            if engine is None:
                pipeline = GlidePipeline.from_selection(
                    self.config, task=task, source=watched, on_load=on_load
                )
                self._start_engine(pipeline)
            else:  # the worker goes on serving the other capability meanwhile
                engine.pipeline.load_more(specs, source=watched, on_load=on_load)
        except WeightsNotFound as e:
            missing = missing_weights(specs.values(), source=source)
            if missing.files:
                self._missing(task, missing, e)
            else:  # not a file the cache lacks: a broken model folder, say
                self._failed(task, str(e))
            return
        except Exception as e:  # any failure must leave the server up and saying why
            self._failed(task, f"loading the models failed: {e}", trace=True)
            return
        self._set(task, self._loaded(task))
        loaded = self._capabilities[task]["models"]
        logger.info("%s ready: %s", TASK_LABELS[task], ", ".join(f"{r} {n}" for r, n in loaded.items()))

    def _missing(self, task: str, missing: MissingWeights, error: WeightsNotFound | None) -> None:
        """`task` cannot load: files are missing and were not (or could not be) downloaded."""
        line = missing.message(error)
        self._missed[task] = (missing, line)
        advice = demo_advice(task) if missing.command else None
        status = _capability(
            "missing",
            reason=f"model files are missing: {missing.why(error)}",
            models=self._capabilities[task]["models"],
            missing=list(missing.files),
            command=missing.command,
            advice=advice,
        )
        self._set(task, status)
        logger.error("%s not ready: %s%s", TASK_LABELS[task], line, f"; or: {advice}" if advice else "")

    def _failed(self, task: str, reason: str, *, trace: bool = False) -> None:
        self._set(task, _capability("failed", reason=reason, models=self._capabilities[task]["models"]))
        logger.error("%s not ready: %s", TASK_LABELS[task], reason, exc_info=trace)

    def _loaded(self, task: str) -> dict[str, Any]:
        pipeline = self.engine.pipeline
        models = {role: m.name for role in TASK_ROLES[task] if (m := getattr(pipeline, role)) is not None}
        return _capability("ready", models=models)

    def _set(self, task: str, status: dict[str, Any]) -> None:
        with self._lock:
            self._capabilities = {**self._capabilities, task: status}

    def _start_engine(self, pipeline: GlidePipeline) -> None:
        engine = Engine(
            pipeline,
            engine_config(self.config),
            store=self._store,
            on_success=self._save_images,
            on_change=self.webhooks.changed,
        )
        engine.start()
        with self._lock:
            self._engine = engine

    # ---- state --------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether at least one capability serves requests."""
        if self.fleet is not None:
            return any(cap["state"] == "ready" for cap in self.capabilities().values())
        return self._engine is not None

    def self_as_worker(self) -> dict[str, Any]:
        """This process, described as a fleet's worker describes itself (`GET /v1/workers`)."""
        engine = self.engine
        pipeline = engine.pipeline
        return {
            "id": "local",
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": self.started_at,
            "heartbeat_at": time.time(),
            "current_jobs": [job.id for job in engine.list_jobs() if job.status == "running"],
            **pipeline.describe(),
            "capabilities": pipeline.capabilities(),
        }

    def capabilities(self) -> dict[str, dict[str, Any]]:
        """Each capability's status; an API replica's come from the live workers (and Redis)."""
        if self.fleet is None:
            return self._capabilities
        pipeline = self.fleet.engine.pipeline
        link = self.fleet.store.link
        try:
            if not link.ping():  # each time: the worker list may be a second old
                raise StoreUnavailable(f"the job store (Redis at {link.where}) does not answer")
            workers = pipeline.workers()
        except StoreUnavailable as e:
            return {task: _capability("failed", reason=str(e)) for task in TASK_ROLES}
        capabilities = {}
        for task in TASK_ROLES:
            serving = [w for w in workers if task in w.get("capabilities", {})]
            if serving:
                models = serving[0]["capabilities"][task]["models"]
                capabilities[task] = _capability(
                    "ready", models=models, reason=f"{len(serving)} live worker(s)"
                )
            elif workers:  # the fleet runs, without this task's models
                reason = "none of the live workers has its models loaded"
                capabilities[task] = _capability("off", reason=reason)
            else:
                where = self.fleet.store.link.where
                reason = f"no live worker yet: start one with `glide-api worker --queue {where}`"
                capabilities[task] = _capability("loading", reason=reason)
        return capabilities

    @property
    def engine(self) -> Engine:
        """The engine; `ModelNotReady` (HTTP 503) while no capability is ready."""
        engine = self._engine
        if engine is None:
            capabilities = self.capabilities()
            pending = [t for t, cap in capabilities.items() if cap["state"] != "off"]
            stuck = all(cap["state"] != "loading" for cap in capabilities.values())
            raise ModelNotReady(
                "; ".join(self._why(t) for t in pending) or "every capability is configured off",
                retry_after=RETRY_STUCK if stuck else RETRY_LOADING,
            )
        return engine

    def engine_for(self, task: str) -> Engine:
        """The engine, once `task`'s models are loaded: `ModelNotReady` (503, naming what is missing)
        while they load or cannot be had; `InvalidParameter` (400) when `task` is configured off.
        Image-to-image needs the text-to-image models (`TASK_CAPABILITY`)."""
        capability = TASK_CAPABILITY[task]
        cap = self.capabilities()[capability]
        if cap["state"] == "ready":
            return self.engine
        if cap["state"] == "off":
            raise InvalidParameter(
                f"{task}: {TASK_LABELS[capability]} is not available on this server: {cap['reason']}"
            )
        raise ModelNotReady(
            self._why(capability), retry_after=RETRY_LOADING if cap["state"] == "loading" else RETRY_STUCK
        )

    def _why(self, task: str) -> str:
        """Why `task` is not ready, in one line: for missing files, the files and the command."""
        cap = self.capabilities()[task]
        return f"{TASK_LABELS[task]}: {self._missed[task][1] if cap['state'] == 'missing' else cap['reason']}"

    def readiness(self) -> dict[str, Any]:
        """`/readyz`'s answer: `ready` (some capability serves requests), `capabilities` (each one's
        status) and, over those not ready: `reason` (None when every capability that is on is
        ready), `missing` (the files), `command` (one command that fetches them all) and `advice`."""
        capabilities = self.capabilities()
        pending = {t: cap for t, cap in capabilities.items() if cap["state"] not in ("ready", "off")}
        missing = sum((self._missed[t][0] for t in pending if t in self._missed), MissingWeights())
        reason = "; ".join(f"{TASK_LABELS[t]}: {cap['reason']}" for t, cap in pending.items())
        if all(cap["state"] == "off" for cap in capabilities.values()):
            reason = "every capability is configured off"
        if self.stopping:
            reason = "the server is shutting down"
        return {
            "ready": any(cap["state"] == "ready" for cap in capabilities.values()) and not self.stopping,
            "stopping": self.stopping,
            "reason": reason or None,
            "missing": list(missing.files),
            "command": missing.command,
            "advice": next((cap["advice"] for cap in pending.values() if cap["advice"]), None),
            "capabilities": {t: dict(cap) for t, cap in capabilities.items()},
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
        finish within `grace` seconds. In memory, every job left then ends with a final event saying
        the server stopped, which open streams and waiting requests get (within `drain` seconds)
        before this returns; with a data dir, the jobs left stay for the next start and open streams
        and waits end without a final event (docs/storage.md). Idempotent."""
        with self._lock:
            self.stopping = True
            engine = self._engine
        logger.info("shutting down: new jobs are refused; the running batch has %g s to finish", grace)
        if engine is not None:
            engine.close(grace=grace, timeout=drain)
        elif self._store is not None:
            self._store.close()
        self.webhooks.close()  # deliveries not made yet stay in the outbox
        self.idempotency.close()
        for held in (self.streams, self.sync_waits):
            if not held.wait_empty(drain):
                logger.warning("shutting down: %d %s still open after %g s", len(held), held.what, drain)
        logger.info("shut down")

    def close(self) -> None:
        self.shutdown(grace=0)
