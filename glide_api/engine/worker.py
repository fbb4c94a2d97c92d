"""The one loop that owns the device: take a batch from the queue, drive the pipeline, hand out results.

Only the worker's thread ever calls `Pipeline.stream`, so models and device memory have one owner.
Per batch:

1. start its jobs (a job cancelled while waiting is skipped);
2. concatenate their samples (job 1's rows, then job 2's, ...) and iterate the pipeline's stream;
3. after every sampling step: stop jobs whose cancel was requested or whose `job_timeout` passed
   (their rows keep being computed but are discarded; when no job is left the stream is closed,
   which stops the pipeline within one step), then publish progress (and previews) for the rest;
4. on the output, give each job its own rows' images.

Failures: an out-of-memory error (`is_out_of_memory`) frees the device cache, then a batch of several
jobs is retried one job at a time, while a single job fails with a clear message. Any other error
fails the batch's jobs with a short message; the traceback goes to the log with the job ids. The loop
itself never dies of an exception.
"""

from __future__ import annotations

import base64
import gc
import logging
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from ..errors import PipelineError
from ..pipeline.outputs import PipelineOutput, StageProgress
from ..pipeline.params import BatchSettings, GenerationRequest, Sample
from .events import Progress, Queued
from .jobs import ImageResult, JobResult
from .queue import JobQueue, QueueEntry
from .stats import EngineStats
from .store import JobStore

logger = logging.getLogger(__name__)

MAX_MESSAGE = 300  # characters of an exception shown to clients; the log has all of it

# What counts as "out of memory": these exception types, any exception whose class name contains
# "OutOfMemory", and messages with one of these phrases (CUDA/MPS/cuBLAS allocators, the CPU allocator).
_OOM_TYPES: tuple[type[BaseException], ...] = tuple(
    {
        t
        for t in (
            MemoryError,
            getattr(torch, "OutOfMemoryError", None),
            getattr(torch.cuda, "OutOfMemoryError", None),
        )
        if t is not None
    }
)
_OOM_PHRASES = ("out of memory", "can't allocate memory", "cublas_status_alloc_failed")


class Pipeline(Protocol):
    """What the engine drives (implemented by `glide_api.pipeline`; tests use fakes)."""

    def validate(self, settings: BatchSettings) -> None:
        """Raise ValueError naming the field if these settings cannot be run (e.g. an unknown size)."""

    def stream(
        self, settings: BatchSettings, samples: Sequence[Sample]
    ) -> Iterator[StageProgress | PipelineOutput]:
        """Yield a `StageProgress` after every sampling step (pred_x0 rows in sample order), then one
        `PipelineOutput` whose `images[i]` belongs to `samples[i]`. Closing the iterator early stops
        the work within one step."""


def is_out_of_memory(error: BaseException) -> bool:
    """True for out-of-memory errors: `MemoryError`, `torch.OutOfMemoryError` (CUDA), any exception
    class named like "...OutOfMemory...", or a message saying "out of memory", "can't allocate memory"
    (CPU allocator) or "CUBLAS_STATUS_ALLOC_FAILED"."""
    if isinstance(error, _OOM_TYPES) or "outofmemory" in type(error).__name__.lower():
        return True
    try:
        message = str(error).lower()
    except Exception:  # a broken __str__ must not turn one failure into another
        return False
    return any(phrase in message for phrase in _OOM_PHRASES)


def free_device_memory() -> None:
    """Return cached device memory after an out-of-memory error (no-op on the CPU)."""
    gc.collect()  # tensors caught in reference cycles are only freed by the collector
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and torch.backends.mps.is_available():
        mps.empty_cache()


@dataclass(frozen=True)
class Failure:
    """Why a batch's run failed: the message its jobs get, and whether it ran out of memory (then a
    batch of several jobs is retried one job at a time)."""

    message: str
    out_of_memory: bool = False


@dataclass(eq=False)
class _Member:
    """A job's place in a running batch."""

    job_id: str
    request: GenerationRequest
    started: float  # engine clock when the job started: its timeout and duration count from here
    rows: slice = field(default_factory=lambda: slice(0, 0))  # its samples' rows in the batch


class Worker:
    """The device-owning loop. `run()` is the thread's target; it returns once the queue is closed."""

    def __init__(
        self,
        *,
        pipeline: Pipeline,
        store: JobStore,
        queue: JobQueue,
        stats: EngineStats,
        max_batch_images: int,
        batching: bool,
        job_timeout: float,
        preview_every: int,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        on_success: Callable[[str, JobResult], None] | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._on_success = on_success
        self._store = store
        self._queue = queue
        self._stats = stats
        self._max_batch_images = max_batch_images
        self._batching = batching
        self._job_timeout = job_timeout
        self._preview_every = preview_every
        self._clock = clock
        self._wall_clock = wall_clock

    def run(self) -> None:
        logger.info("engine worker: started")
        while (
            entries := self._queue.take(max_images=self._max_batch_images, batching=self._batching)
        ) is not None:
            self._queue.report_moves(self.tell_position)
            try:
                self._serve(entries)
            except Exception:  # a bug in the engine, not in the pipeline: keep serving
                ids = _ids(entries)
                logger.exception("jobs %s: unexpected engine error", ids)
                for entry in entries:
                    self._fail(entry.job_id, "internal error in the engine (details in the server log)")
        logger.info("engine worker: stopped")

    def tell_position(self, job_id: str, position: int) -> None:
        self._store.publish(job_id, Queued(job_id=job_id, position=position))

    # ---- one batch --------------------------------------------------------------------------------

    def _serve(self, entries: list[QueueEntry]) -> None:
        members = []
        for entry in entries:
            job = self._store.start(entry.job_id, at=self._wall_clock())
            if job is None:  # cancelled after the worker took it from the queue
                self._stats.count("cancelled")
                logger.info("job %s: cancelled before it started", entry.job_id)
                continue
            self._stats.observe("queue_seconds", max(0.0, (job.started_at or 0.0) - job.created_at))
            members.append(_Member(job.id, job.generation_request(), started=self._clock()))
        if members:
            self._run(entries[0].settings, members)

    def _run(self, settings: BatchSettings, members: list[_Member]) -> None:
        samples: list[Sample] = []
        for member in members:
            own = member.request.samples()
            member.rows = slice(len(samples), len(samples) + len(own))
            samples.extend(own)
        active = {m.job_id: m for m in members}
        ids = _ids(members)
        logger.info(
            "jobs %s: sampling a batch of %d images (size %d, %s)",
            ids,
            len(samples),
            settings.size,
            settings.task,
        )
        self._stats.count("batches")
        self._stats.count("images", len(samples))

        began = last_step = self._clock()
        failure: Failure | None = None
        stream: Iterator[StageProgress | PipelineOutput] | None = None
        item: StageProgress | PipelineOutput | None = None
        try:
            stream = self._pipeline.stream(settings, samples)
            for item in stream:
                now = self._clock()
                if isinstance(item, PipelineOutput):
                    self._deliver(active, item, samples, now)
                    continue
                self._stats.observe("step_seconds", now - last_step)
                last_step = now
                self._stop(active, now, timeouts=True)
                if not active:
                    logger.info("jobs %s: no job of the batch is left; stopping the pipeline", ids)
                    break
                for member in active.values():
                    self._progress(member, item, now)
        except Exception as error:
            failure = self._diagnose(error, ids, len(samples))
        finally:
            # Drop the last pred_x0 and output, and stop the pipeline: no device memory outlives the run.
            item = None
            if stream is not None:
                _close(stream, ids)
            stream = None
        self._stats.observe("batch_seconds", self._clock() - began)

        if failure is None and active:
            logger.error("jobs %s: the pipeline ended without an output", _ids(active.values()))
            failure = Failure("the pipeline ended without producing images")
        if failure is not None:
            self._recover(settings, members, active, failure)

    def _progress(self, member: _Member, step: StageProgress, now: float) -> None:
        event = Progress(job_id=member.job_id, progress=step.progress, elapsed=now - member.started)
        self._store.advance(member.job_id, event, preview=self._preview(member, step))

    def _preview(self, member: _Member, step: StageProgress) -> str | None:
        """Base64 PNG of the member's first row, on preview steps, only if a subscriber wants it."""
        every, at = self._preview_every, step.progress
        if not every or not (at.step % every == 0 or at.step == at.total):
            return None
        if not self._store.wants_previews(member.job_id):
            return None
        try:
            png = step.preview_png(member.rows.start)
        except Exception:  # a preview is a nicety; never fail a job for it
            logger.warning("job %s: could not render a preview", member.job_id, exc_info=True)
            return None
        return base64.b64encode(png).decode("ascii")

    def _deliver(
        self, active: dict[str, _Member], output: PipelineOutput, samples: list[Sample], now: float
    ) -> None:
        if len(output.images) != len(samples) or any(
            image.seed != sample.seed for image, sample in zip(output.images, samples, strict=False)
        ):
            # Refuse to hand anyone an image that may be someone else's.
            raise PipelineError(
                f"the pipeline returned {len(output.images)} images that do not match the "
                f"{len(samples)} samples (count or seeds)"
            )
        self._stop(active, now, timeouts=False)  # a cancel during the final decode still wins
        for job_id, member in list(active.items()):
            del active[job_id]
            result = JobResult(
                images=tuple(
                    ImageResult.of(image.png, seed=image.seed, metadata=dict(image.metadata))
                    for image in output.images[member.rows]
                ),
                chain=tuple(output.chain),
                stage_seconds=dict(output.stage_seconds),
                total_seconds=float(output.total_seconds),
                peak_memory_bytes=output.peak_memory_bytes,
                models=dict(output.models),
            )
            if self._store.finish(job_id, "succeeded", at=self._wall_clock(), result=result) is not None:
                seconds = now - member.started
                self._stats.count("succeeded")
                self._stats.observe("job_seconds", seconds)
                logger.info("job %s: succeeded (%d images, %.2f s)", job_id, len(result.images), seconds)
                if self._on_success is not None:
                    try:
                        self._on_success(job_id, result)
                    except Exception:  # e.g. a full disk: the job stands, the worker goes on
                        logger.exception("job %s: the on_success hook failed", job_id)

    # ---- stopping and failing ---------------------------------------------------------------------

    def _stop(self, active: dict[str, _Member], now: float, *, timeouts: bool) -> None:
        """Remove from `active` (and finish) the jobs cancelled or, with `timeouts`, past their limit."""
        cancelled = self._store.cancel_requested(active)
        for job_id, member in list(active.items()):
            if job_id in cancelled:
                del active[job_id]
                if self._store.finish(job_id, "cancelled", at=self._wall_clock()) is not None:
                    self._stats.count("cancelled")
                    logger.info("job %s: cancelled while running", job_id)
            elif timeouts and now - member.started >= self._job_timeout:
                del active[job_id]
                self._stats.count("timed_out")
                self._fail(job_id, f"timed out after {self._job_timeout:g} s (the server's job_timeout)")

    def _diagnose(self, error: Exception, ids: str, images: int) -> Failure:
        oom = is_out_of_memory(error)
        if oom:
            logger.warning(
                "jobs %s: out of device memory at a batch of %d images", ids, images, exc_info=error
            )
            message = f"out of device memory at a batch of {images} images; try a smaller batch_size"
        else:
            logger.error("jobs %s: generation failed", ids, exc_info=error)
            text = f"{type(error).__name__}: {error}"
            message = "generation failed: " + (text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "…")
        # The traceback's frames still hold the run's tensors (device memory): release them now.
        traceback.clear_frames(error.__traceback__)
        return Failure(message, out_of_memory=oom)

    def _recover(
        self,
        settings: BatchSettings,
        members: list[_Member],
        active: dict[str, _Member],
        failure: Failure,
    ) -> None:
        left = list(active.values())
        if failure.out_of_memory:
            self._stats.count("out_of_memory")
            free_device_memory()
            if len(members) > 1:
                # Several jobs shared the batch: each alone may fit. Progress restarts at step 1.
                logger.warning("jobs %s: retrying each job of the batch alone", _ids(left))
                self._stats.count("oom_retries", len(left))
                for member in left:
                    alone = {member.job_id: member}
                    self._stop(alone, self._clock(), timeouts=True)  # not worth a run if already stopped
                    if alone:
                        self._run(settings, [member])
                return
        for member in left:
            self._fail(member.job_id, failure.message)

    def _fail(self, job_id: str, message: str) -> None:
        if self._store.finish(job_id, "failed", at=self._wall_clock(), error=message) is not None:
            self._stats.count("failed")
            logger.info("job %s: failed: %s", job_id, message)


def _close(stream: Iterator[object], ids: str) -> None:
    """Close a pipeline stream (a generator stops at its current step and runs its cleanup)."""
    close = getattr(stream, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception:
        logger.exception("jobs %s: the pipeline failed while stopping", ids)


def _ids(items: Iterable[_Member | QueueEntry]) -> str:
    return ",".join(item.job_id for item in items)
