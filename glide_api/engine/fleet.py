"""A fleet on one Redis: API replicas that admit and serve jobs, workers that run them.

    replica = Fleet.replica("redis://localhost:6379/0", EngineConfig(max_queue=64))
    job = replica.engine.submit(request)          # any replica: status, events, images, cancel
    worker = Fleet.worker("redis://…", pipeline, EngineConfig(), worker_id="gpu0")
    worker.start()                                # runs jobs until worker.close()

A replica's engine has no worker thread; its `pipeline` is a `FleetPipeline`, the union of what the
live workers say they serve, so a replica validates requests as the workers would run them. Every
worker of a fleet should load the same models (a job goes to whichever worker reads it first).
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidParameter, ModelNotReady
from ..model_selection import TASK_CAPABILITY
from ..pipeline.outputs import PipelineOutput, StageProgress
from ..pipeline.params import BatchSettings, Sample
from .engine import Engine, EngineConfig
from .jobs import Job, JobResult
from .redis_queue import RedisQueue, WorkerPresence, live_workers
from .redis_store import RedisJobStore, RedisLink

WORKERS_CACHE_SECONDS = 1.0  # how stale a replica's view of the live workers may be
NO_WORKER_RETRY = 5


class FleetPipeline:
    """What the live workers serve, as a `Pipeline` for validation and descriptions (it runs nothing)."""

    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self._seen: tuple[float, list[dict[str, Any]]] = (-1e9, [])

    def workers(self) -> list[dict[str, Any]]:
        """The live workers' records (cached for `WORKERS_CACHE_SECONDS`)."""
        at, seen = self._seen
        if time.monotonic() - at > WORKERS_CACHE_SECONDS:
            seen = live_workers(self._link)
            self._seen = (time.monotonic(), seen)
        return seen

    def _serving(self, task: str) -> list[dict[str, Any]]:
        capability = TASK_CAPABILITY[task]
        return [
            w["capabilities"][capability] for w in self.workers() if capability in w.get("capabilities", {})
        ]

    def serves(self, task: str) -> bool:
        return bool(self._serving(task))

    def sizes(self, task: str = "text2im") -> list[int]:
        return sorted({size for caps in self._serving(task) for size in caps["sizes"]})

    def default_size(self, task: str = "text2im") -> int:
        serving = self._serving(task)
        if not serving:
            raise InvalidParameter(f"task: no live worker serves {task}")
        return serving[0]["default_size"]

    def validate(self, settings: BatchSettings) -> None:
        serving = self._serving(settings.task)
        if not serving:
            raise ModelNotReady(
                f"no live worker serves {settings.task}: start one with `glide-api worker --queue "
                f"{self._link.where}`",
                retry_after=NO_WORKER_RETRY,
            )
        if not any(settings.size in caps["sizes"] for caps in serving):
            raise InvalidParameter(
                f"size: must be one of {', '.join(map(str, self.sizes(settings.task)))} for "
                f"{settings.task} with the workers' models (got {settings.size})"
            )
        if not any(caps["diffusion_steps"] == settings.diffusion_steps for caps in serving):
            raise InvalidParameter(
                f"base_respacing: the workers' base models have {serving[0]['diffusion_steps']} diffusion "
                f"steps, the settings assume {settings.diffusion_steps}"
            )

    def stream(
        self, settings: BatchSettings, samples: Sequence[Sample]
    ) -> Iterator[StageProgress | PipelineOutput]:
        raise InvalidParameter("an API replica runs no jobs: its workers do")

    def device_memory(self) -> dict[str, int]:
        return {"allocated": 0, "reserved": 0}  # a replica holds no device

    def describe(self) -> dict[str, object]:
        workers = self.workers()
        first = workers[0] if workers else {}
        return {
            "models": first.get("models", {}),
            "device": first.get("device"),
            "precision": first.get("precision"),
            "batch_invariant": first.get("batch_invariant"),
            "sizes": {task: self.sizes(task) for task in ("text2im", "inpaint")},
            "workers": len(workers),
        }


@dataclass
class Fleet:
    """One process's part in a fleet: its engine on the shared store and queue, and (a worker) its
    heartbeat."""

    engine: Engine
    store: RedisJobStore
    queue: RedisQueue
    presence: WorkerPresence | None = None

    @classmethod
    def replica(
        cls,
        url: str,
        config: EngineConfig,
        *,
        on_change: Callable[[Job], None] | None = None,
    ) -> Fleet:
        link = RedisLink(url)
        store = _store(link, config)
        queue = RedisQueue(store, max_jobs=config.max_queue)
        engine = Engine(FleetPipeline(link), config, store=store, queue=queue, on_change=on_change)
        return cls(engine, store, queue)

    @classmethod
    def worker(
        cls,
        url: str,
        pipeline: Any,
        config: EngineConfig,
        *,
        worker_id: str | None = None,
        claim_timeout: float = 30.0,
        max_attempts: int = 3,
        describe: Callable[[], dict[str, Any]] | None = None,
        on_change: Callable[[Job], None] | None = None,
        on_success: Callable[[str, JobResult], None] | None = None,
    ) -> Fleet:
        """`describe()`: what the worker tells the fleet (default: the pipeline's `describe()` and
        `capabilities()`)."""
        link = RedisLink(url)
        worker_id = worker_id or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        store = _store(link, config)
        queue = RedisQueue(
            store,
            max_jobs=config.max_queue,
            consumer=worker_id,
            claim_timeout=claim_timeout,
            max_attempts=max_attempts,
        )
        presence: WorkerPresence | None = None

        def changed(job: Job) -> None:  # its current jobs changed: tell the fleet at once
            if presence is not None:
                presence.poke()
            if on_change is not None:
                on_change(job)

        engine = Engine(pipeline, config, store=store, queue=queue, on_change=changed, on_success=on_success)
        if describe is None:

            def describe() -> dict[str, Any]:
                return {**pipeline.describe(), "capabilities": pipeline.capabilities()}

        presence = WorkerPresence(
            store,
            worker_id=worker_id,
            claim_timeout=claim_timeout,
            describe=describe,
            current=store.running_here,
        )
        return cls(engine, store, queue, presence)

    def start(self) -> None:
        """A worker: announce itself and start taking jobs."""
        if self.presence is not None:
            self.presence.start()
        self.engine.start()

    def close(self, *, grace: float = 0.0) -> None:
        """Stop. A worker lets its running batch go on for `grace` seconds, then hands every job it
        holds back to the queue (none waits for `claim_timeout`) and leaves the fleet."""
        self.engine.close(grace=grace, timeout=grace + 5)
        if self.presence is not None:
            self.queue.hand_back()
            self.presence.stop()
        self.store.link.close()


def _store(link: RedisLink, config: EngineConfig) -> RedisJobStore:
    return RedisJobStore(
        link,
        max_queue=config.max_queue,
        keep_finished=config.keep_finished,
        keep_finished_bytes=config.keep_finished_bytes,
        keep_finished_seconds=config.keep_finished_seconds,
    )
