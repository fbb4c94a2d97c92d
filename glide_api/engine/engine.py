"""The engine: many callers submit, wait, watch and cancel; one worker thread uses the device.

    engine = Engine(pipeline, EngineConfig(max_queue=32))
    with engine:                                          # starts the worker; closes on exit
        job = engine.submit(GenerationRequest.create("a corgi", size=64))
        for event in engine.subscribe(job.id):           # queued, started, progress..., succeeded
            print(event.to_dict())
        png = engine.image(job.id, 0)

Every call returns at once except `wait` and iterating `subscribe`, which take timeouts. A full queue
raises `QueueFull` immediately (with `retry_after`); nothing here ever blocks on the device.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from .. import checks
from ..errors import EngineClosed, InvalidParameter, InvalidType, QueueFull
from ..pipeline.params import GenerationRequest
from .events import Event, Queued
from .jobs import Job, JobResult, JobStatus
from .queue import JobQueue, QueueEntry
from .stats import EngineStats
from .store import WEEK, JobStore, MemoryJobStore
from .worker import Pipeline, Worker

logger = logging.getLogger(__name__)

STOPPED = "the server stopped before this job finished; submit it again"


@dataclass(frozen=True)
class EngineConfig:
    """The engine's limits. Each is a hard bound on memory or waiting; defaults suit one GPU.

    max_queue: jobs that may wait (not counting the running batch); one more is refused with
        `QueueFull` at once.
    max_batch_images: images in one sampling batch, and so also the most one job may ask for
        (`batch_size`). Device memory grows with it.
    batching: merge waiting jobs with equal `BatchSettings` into one batch (each keeps its own
        prompt, seeds and guidance; the images are the same as when run alone).
    job_timeout: seconds a job may run, counted from its start; checked every sampling step.
    keep_finished: finished jobs (with their images and event histories) kept for `get`, `image`
        and `subscribe`; older ones are evicted and then unknown (`JobNotFound`).
    keep_finished_bytes: payload bytes (PNGs; uploads are dropped when a job finishes) the kept
        finished jobs may hold together; the oldest are evicted first until the bounds hold, but
        the most recently finished job is always kept, so that its client can fetch it.
    keep_finished_seconds: a finished job is evicted this long after it finished.
    preview_every: a progress event carries a preview PNG every this many steps (and at each stage's
        last step), for subscribers that ask for previews; 0 = never.
    """

    max_queue: int = 32
    max_batch_images: int = 8
    batching: bool = True
    job_timeout: float = 1800.0
    keep_finished: int = 256
    keep_finished_bytes: int = 1 << 30
    keep_finished_seconds: float = WEEK
    preview_every: int = 5

    def __post_init__(self) -> None:
        for name, least in (
            ("max_queue", 1),
            ("max_batch_images", 1),
            ("keep_finished", 1),
            ("keep_finished_bytes", 1),
            ("preview_every", 0),
        ):
            checks.integer(name, getattr(self, name), minimum=least)
        if not isinstance(self.batching, bool):
            raise InvalidParameter(f"batching: must be true or false (got {self.batching!r})")
        if (
            not checks.is_number(self.job_timeout)
            or not math.isfinite(self.job_timeout)
            or self.job_timeout <= 0
        ):
            raise InvalidParameter(
                f"job_timeout: must be a positive number of seconds (got {self.job_timeout!r})"
            )
        if not checks.is_number(self.keep_finished_seconds) or not self.keep_finished_seconds > 0:
            raise InvalidParameter(
                f"keep_finished_seconds: must be a positive number (got {self.keep_finished_seconds!r})"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Engine:
    """Jobs in, images out: admission, the job registry and the device-owning worker behind one object.

    `clock` (monotonic seconds) times job timeouts and durations; `wall_clock` (epoch seconds) stamps
    jobs. `store` replaces the in-memory job registry (e.g. a durable or shared one; it then applies
    its own retention instead of the `keep_finished*` settings); `queue` replaces the in-process
    queue (a fleet's shared one, engine/redis_queue.py, with a `RedisJobStore`). Jobs the store
    already holds queued (a durable store's, after a restart) are queued now, in their order, even
    past `max_queue`: they were admitted before. `on_change(job)` is told of each status a job
    reaches (queued, running, its final one), after the store recorded it, on the thread that made
    the change: it must return at once (e.g. put the job on a queue of its own). Thread-safe: any
    number of threads may call any method.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        config: EngineConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        store: JobStore | None = None,
        on_success: Callable[[str, JobResult], None] | None = None,
        on_change: Callable[[Job], None] | None = None,
        queue: JobQueue | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._config = config if config is not None else EngineConfig()
        self._wall_clock = wall_clock
        self._stats = EngineStats()
        self._store: JobStore = (
            store
            if store is not None
            else MemoryJobStore(
                keep_finished=self._config.keep_finished,
                keep_finished_bytes=self._config.keep_finished_bytes,
                keep_finished_seconds=self._config.keep_finished_seconds,
                clock=wall_clock,
            )
        )
        if on_change is not None:
            self._store = _Announcing(self._store, on_change)
        self._queue = (
            queue
            if queue is not None
            else JobQueue(max_jobs=self._config.max_queue, retry_after=self._stats.retry_after)
        )
        if not getattr(self._queue, "shared", False):  # a shared queue keeps its jobs itself
            self._restore_queued()
        self._worker = Worker(
            pipeline=pipeline,
            store=self._store,
            queue=self._queue,
            stats=self._stats,
            max_batch_images=self._config.max_batch_images,
            batching=self._config.batching,
            job_timeout=self._config.job_timeout,
            preview_every=self._config.preview_every,
            clock=clock,
            wall_clock=wall_clock,
            on_success=on_success,
        )
        self._lock = threading.Lock()  # guards the lifecycle fields
        self._thread: threading.Thread | None = None
        self._closed = False

    # ---- lifecycle --------------------------------------------------------------------------------

    @property
    def config(self) -> EngineConfig:
        return self._config

    @property
    def pipeline(self) -> Pipeline:
        return self._pipeline

    def start(self) -> None:
        """Start the worker thread (no-op if running). Jobs submitted before wait in the queue."""
        with self._lock:
            if self._closed:
                raise EngineClosed("the engine is shut down; create a new one")
            if self._thread is not None:
                return
            # A daemon thread: a pipeline stuck inside a step must not keep the process alive.
            self._thread = threading.Thread(target=self._worker.run, name="glide-engine-worker", daemon=True)
            self._thread.start()

    def _restore_queued(self) -> None:
        for job in self._store.jobs():
            if job.status != "queued":
                continue
            request = job.generation_request()
            try:
                self._pipeline.validate(request.settings)  # the server may run other models now
            except ValueError as e:
                self._store.finish(job.id, "failed", at=self._wall_clock(), error=f"cannot run any more: {e}")
                continue
            self._queue.restore(QueueEntry(job.id, request.settings, request.batch_size))
            logger.info("job %s: queued again (admitted before a restart)", job.id)

    def close(self, *, grace: float = 0.0, timeout: float | None = None) -> None:
        """Stop: refuse new jobs; let the running batch go on for up to `grace` seconds, then stop it
        at its next step; join the worker (up to `timeout` seconds more). Idempotent.

        With a memory store, the waiting jobs end at once and the running ones after the grace, each
        `failed` with `STOPPED`, so its final event says why. With a durable store, no job ends:
        the store is closed after the grace, so unfinished jobs stay as recorded (the running ones
        run again from the start in the next process), and open subscriptions and waits end without
        a final event.
        """
        with self._lock:
            first = not self._closed
            self._closed = True
            thread = self._thread
        if first:
            self._queue.close()  # no new batch starts: the worker's next take() returns None
            durable = self._store.durable
            if not durable:
                self._end_unfinished(running=False)
            if thread is not None:
                thread.join(grace)
            if durable:
                self._store.close()  # the running batch stops at its next step, left as it was
            else:
                self._end_unfinished(running=True)
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                logger.warning(
                    "engine worker: still busy %s s after close; left running as a daemon", timeout
                )

    def _end_unfinished(self, *, running: bool) -> None:
        """End the waiting jobs (or also the running ones) with `STOPPED`; the worker stops a running
        job at its next step, since it is finished."""
        for job in self._store.jobs():
            if job.done or (job.status == "running" and not running):
                continue
            if self._store.finish(job.id, "failed", at=self._wall_clock(), error=STOPPED) is not None:
                self._stats.count("stopped")
                logger.info("job %s: ended %s (engine closing)", job.id, job.status)

    def __enter__(self) -> Engine:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---- jobs -------------------------------------------------------------------------------------

    def submit(self, request: GenerationRequest, *, owner: str | None = None) -> Job:
        """Queue a job; returns it as queued. Never blocks. `owner` is kept on the job (see `Job`).

        Raises ValueError (naming the field) if the pipeline cannot run `request.settings` or
        `batch_size` exceeds `max_batch_images`; `QueueFull` (with `retry_after`) when `max_queue`
        jobs are waiting; `EngineClosed` after `close()`.
        """
        if not isinstance(request, GenerationRequest):
            raise InvalidType(f"request: must be a GenerationRequest, got {type(request).__name__}")
        limit = self._config.max_batch_images
        if request.batch_size > limit:
            raise InvalidParameter(
                f"batch_size: at most {limit} images per job on this server (got {request.batch_size})"
            )
        self._pipeline.validate(request.settings)
        job = Job.new(request, at=self._wall_clock(), owner=owner)

        def admit(position: int) -> None:  # runs before the worker can see the job
            self._store.add(job, Queued(job_id=job.id, position=position))

        try:
            position = self._queue.put(
                QueueEntry(job.id, request.settings, request.batch_size), on_admit=admit
            )
        except QueueFull as e:
            self._stats.count("rejected")
            logger.info("job %s: refused, the queue is full (retry after %d s)", job.id, e.retry_after)
            raise
        self._stats.count("submitted")
        logger.info(
            "job %s: queued at position %d (%d images, size %d)",
            job.id,
            position,
            request.batch_size,
            request.settings.size,
        )
        return job

    def get(self, job_id: str) -> Job:
        """A snapshot of the job. `JobNotFound` for an unknown or evicted id."""
        return self._store.get(job_id)

    def list_jobs(self) -> list[Job]:
        """Snapshots of every job held (waiting, running, and the last `keep_finished`), oldest first."""
        return self._store.jobs()

    def cancel(self, job_id: str) -> Job:
        """Cancel a job. A waiting job is cancelled at once; a running one gets `cancel_requested` and
        stops within one sampling step (batch-mates go on); a finished job is returned unchanged.
        `JobNotFound` for an unknown id."""
        job = self._store.request_cancel(job_id, at=self._wall_clock())
        if job.status == "cancelled" and self._queue.remove(job_id):
            # Exactly one of this remove and the worker's take holds the entry: counted once.
            self._stats.count("cancelled")
            logger.info("job %s: cancelled while queued", job_id)
            self._queue.report_moves(self._worker.tell_position)
        elif job.status == "running":
            logger.info("job %s: cancel requested; it stops at its next step", job_id)
        return job

    @property
    def stopped(self) -> bool:
        """True once `close` has closed a durable store: waits and subscriptions then end at once,
        their jobs unfinished (they run in the next process)."""
        return self._store.closed

    def wait(self, job_id: str, *, timeout: float | None = None) -> Job:
        """Block until the job finishes or `timeout` seconds pass (None: no limit), or the engine is
        `stopped`; returns the snapshot either way (check `job.done`). `JobNotFound` for an unknown
        id."""
        return self._store.wait(job_id, timeout=timeout)

    def watchers(self, job_id: str) -> int:
        """How many `wait` calls and `subscribe` iterations (from the first event read until it ends
        or is closed) are watching the job right now; a caller's own `wait` counts only while it is
        inside the call. E.g. a server whose client left cancels the job only if this is 0.
        `JobNotFound` for an unknown id."""
        return self._store.watchers(job_id)

    def image(self, job_id: str, index: int) -> bytes:
        """PNG bytes of image `index` of a succeeded job (`NoResult` otherwise, `IndexError`)."""
        return self._store.image(job_id, index)

    def subscribe(
        self,
        job_id: str,
        *,
        previews: bool = False,
        after: int | None = None,
        timeout: float | None = None,
        heartbeat: float | None = None,
    ) -> Iterator[Event]:
        """The job's events, in order: those already past, then live ones, ending with its final event
        (a finished job's history is replayed and ends). The final `Succeeded` carries the finished
        job as `snapshot`, images included: send those, not a fresh lookup, which fails once the job
        is evicted.

        previews: progress events carry a base64 PNG every `preview_every` steps (rendered only while
            someone asks). after: resume after this `seq` (e.g. an SSE Last-Event-ID).
        timeout: seconds the whole iteration may take, then `TimeoutError`. heartbeat: yield a
            `Heartbeat` after this many quiet seconds (lets a server notice a gone client).
        `JobNotFound` for an unknown id (raised by this call). A slow reader never holds up the worker.
        """
        return self._store.events(
            job_id, previews=previews, after=after, timeout=timeout, heartbeat=heartbeat
        )

    # ---- metrics ----------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Plain data for /metrics: queue depth, jobs by status, counters, and duration histograms in
        seconds. Counters: `timed_out` jobs are also counted in `failed`; `out_of_memory` counts the
        errors (a batch then retried job by job included), `oom_retries` the jobs retried alone."""
        with self._lock:
            alive = self._thread is not None and self._thread.is_alive()
        return {
            "queue_depth": len(self._queue),
            "max_queue": self._config.max_queue,
            "jobs": self._store.counts(),
            **self._stats.snapshot(),
            "worker_alive": alive,
            "config": self._config.to_dict(),
        }


class _Announcing:
    """The engine's store, telling `on_change` of each status a job reaches (see `Engine`)."""

    def __init__(self, store: JobStore, on_change: Callable[[Job], None]) -> None:
        self._store = store
        self._on_change = on_change

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def add(self, job: Job, event: Event) -> None:
        self._store.add(job, event)
        self._tell(job)

    def start(self, job_id: str, *, at: float) -> Job | None:
        return self._tell(self._store.start(job_id, at=at))

    def finish(self, job_id: str, status: JobStatus, **details: Any) -> Job | None:
        return self._tell(self._store.finish(job_id, status, **details))

    def request_cancel(self, job_id: str, *, at: float) -> Job:
        job = self._store.request_cancel(job_id, at=at)
        if job.status == "cancelled":
            self._tell(job)  # told again for a job cancelled before: the listener tells repeats apart
        return job

    def _tell(self, job: Job | None) -> Job | None:
        if job is not None:
            try:
                self._on_change(job)
            except Exception:  # a listener's bug must not fail the transition it was told of
                logger.exception("job %s: the on_change hook failed", job.id)
        return job
