"""The job registry: jobs, their event histories, their results, and how long finished ones are kept.

`JobStore` is the interface the engine uses; `MemoryJobStore` is the in-process implementation: live
state, waiting and notification in this process's memory. Given a `Persistence` (engine/durable.py:
SQLite and image files), it also writes every change through to it and loads from it when made, so
jobs outlive the process; waits still never poll the disk (one process owns a data dir). A
Redis-backed store can implement the same methods: jobs are plain data (`Job`), events are plain
data with a per-job sequence number, and a subscription is "read the job's history from a position
on, waiting for more", which is what a Redis stream offers.

Subscribers read each job's append-only history with their own cursor. Publishing only appends and
notifies that job's waiters, so a slow subscriber can never hold up the worker, no event is lost
for it, and nobody is woken by another job's steps; what a subscriber holds of its own is O(1).
Previews (large) are not kept in the history: the store keeps a job's last `PREVIEWS_KEPT` while it
runs or someone who asked for previews still reads it, so a subscriber that lags further behind
skips stale ones. The final `Succeeded` carries the finished job (`snapshot`, its images included),
so a subscriber can finish reading, images and all, a job evicted meanwhile.

Memory: a job's history is about one small event per sampling step (a 100 + 27 step run: ~130
events). A job drops its uploads when it finishes (`Job.finish`). Finished jobs are kept within three
bounds, `keep_finished` jobs, `keep_finished_bytes` of payload (`Job.held_bytes`: PNGs, and any
uploads still held) and `keep_finished_seconds` since they finished; the oldest finished ones are
evicted first, history and images together, until all hold. The most recently finished job is
always kept past the count and byte bounds (not past its age), so that its client can fetch it; the
next finish evicts it. A subscriber or waiter still reading an evicted job keeps it alive until it
is done (a durable store deletes its image files only then). With a persistence, finished jobs'
PNGs live in files only, read on demand, so `keep_finished_bytes` bounds the disk, not memory.

`close()` freezes the store: nothing changes any more (every change is ignored, and every job reads
as cancel-requested, so a running batch stops at its next step), and open waits and subscriptions
end without a final event. With a persistence, what it recorded is then exactly what the next
process loads: unfinished jobs stay unfinished and run there.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from .. import checks
from ..errors import IndexOutOfRange, InvalidParameter, JobNotFound, NoResult, WaitTimeout
from .events import Cancelled, Event, Failed, Heartbeat, Progress, Queued, Started, Succeeded
from .jobs import STATUSES, Job, JobResult, JobStatus

PREVIEWS_KEPT = 4  # latest previews kept per running job (each a PNG, up to ~200 kB at 256 px)
WEEK = 7 * 24 * 3600.0


class JobStore(Protocol):
    """What the engine needs from a job registry. Every method is atomic and thread-safe."""

    def add(self, job: Job, event: Event) -> None:
        """Register a new job with its first event (its `Queued` position)."""

    def get(self, job_id: str) -> Job:
        """A snapshot of the job; `JobNotFound` for an unknown or evicted id."""

    def jobs(self) -> list[Job]:
        """Snapshots of every job held, oldest first."""

    def counts(self) -> dict[str, int]:
        """How many jobs are held in each status."""

    def start(self, job_id: str, *, at: float) -> Job | None:
        """queued -> running, publishing `Started`; None if the job is no longer queued or known."""

    def advance(self, job_id: str, event: Progress, *, preview: str | None = None) -> None:
        """Record a running job's progress (`event.progress`) and publish `event` (with `preview` for
        those who asked)."""

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        *,
        at: float,
        error: str | None = None,
        result: JobResult | None = None,
    ) -> Job | None:
        """Move the job to a final status and publish its final event; None if it already had one."""

    def request_cancel(self, job_id: str, *, at: float) -> Job:
        """Cancel a queued job now (publishing `Cancelled`), flag a running one; `JobNotFound`."""

    def cancel_requested(self, job_ids: Iterable[str]) -> set[str]:
        """Those of `job_ids` whose cancel has been requested (or that are already finished)."""

    def publish(self, job_id: str, event: Event) -> None:
        """Append an event to a job's history (ignored after its final event or for unknown ids)."""

    def wants_previews(self, job_id: str) -> bool:
        """Whether a live subscriber of the job asked for previews (so rendering one is worth it)."""

    def image(self, job_id: str, index: int) -> bytes:
        """PNG bytes of a succeeded job's image; `JobNotFound`, `NoResult`, or `IndexError`."""

    def wait(self, job_id: str, *, timeout: float | None) -> Job:
        """Block until the job is finished or `timeout` seconds passed; returns its snapshot."""

    def watchers(self, job_id: str) -> int:
        """How many `wait` calls and `events` subscriptions on the job are active now; `JobNotFound`."""

    def events(
        self,
        job_id: str,
        *,
        previews: bool = False,
        after: int | None = None,
        timeout: float | None = None,
        heartbeat: float | None = None,
    ) -> Iterator[Event]:
        """The job's events in order (history, then live) up to its final event, the `Succeeded` one
        with its `snapshot`; see `MemoryJobStore`."""

    @property
    def durable(self) -> bool:
        """Whether jobs outlive this process (then `close` leaves unfinished jobs for the next one)."""

    def close(self) -> None:
        """Freeze: ignore every change from now on, end open waits and subscriptions (see above)."""

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""


class Persistence(Protocol):
    """Where a `MemoryJobStore` writes its jobs through to (engine/durable.py). The store calls
    `write` and `forget` with its lock held, in the order the changes happen."""

    def load(self) -> list[tuple[Job, list[Event]]]:
        """Every job recorded, in admission order, each with its history."""

    def write(self, job: Job, event: Event | None) -> None:
        """Record the job as it is now and, if given, its new event, in one transaction."""

    def keep_images(self, job_id: str, result: JobResult) -> JobResult:
        """Write the result's PNGs to files (durably) and return it with the images in those files;
        called before the success is recorded, outside the store's lock."""

    def forget(self, job_id: str, *, images: bool) -> None:
        """Delete the job's record and history, and its image files if `images`."""

    def forget_images(self, job_id: str) -> None:
        """Delete the job's image files (if any)."""

    def close(self) -> None:
        """Stop writing; release the data dir."""


def check_waits(*, timeout: float | None, heartbeat: float | None) -> None:
    """A subscription's `timeout` and `heartbeat`: positive seconds, or None."""
    for name, value in (("timeout", timeout), ("heartbeat", heartbeat)):
        if value is not None and value <= 0:
            raise InvalidParameter(f"{name}: must be a positive number of seconds or None (got {value!r})")


def final_event(job: Job) -> Event:
    """The event that ends a finished job's history."""
    if job.status == "succeeded":
        return Succeeded(job_id=job.id, job=job.to_dict(), snapshot=job)
    if job.status == "failed":
        return Failed(job_id=job.id, message=job.error or "failed")
    return Cancelled(job_id=job.id)


@dataclass(eq=False)
class _Record:
    job: Job
    changed: threading.Condition  # on the store's lock; notified when this job's history grows
    history: list[Event] = field(default_factory=list)
    previews: deque[tuple[int, str]] = field(default_factory=lambda: deque(maxlen=PREVIEWS_KEPT))
    watchers: int = 0  # active `wait` calls and `events` subscriptions
    preview_watchers: int = 0  # those subscriptions that asked for previews
    evicted: bool = False  # no longer kept; its image files go when its last watcher leaves


class MemoryJobStore:
    """In-process `JobStore`: one lock guards everything, with one condition per job on it, so a
    waiter wakes only for its own job's events; waits never poll.

    Waits (`wait`, `events`) are measured in real seconds (`time.monotonic`); the age of finished
    jobs by `clock` (epoch seconds, as `Job.finished_at`). With `persistence`, the jobs it holds are
    loaded now: an unfinished job is re-queued (a running one back to queued, from the start; one
    whose cancel was requested ends cancelled), each with a `Queued` event of its new position.
    """

    def __init__(
        self,
        *,
        keep_finished: int,
        keep_finished_bytes: int,
        keep_finished_seconds: float = WEEK,
        clock: Callable[[], float] = time.time,
        persistence: Persistence | None = None,
    ) -> None:
        for name, value in (("keep_finished", keep_finished), ("keep_finished_bytes", keep_finished_bytes)):
            checks.integer(name, value, minimum=1)
        if not checks.is_number(keep_finished_seconds) or not keep_finished_seconds > 0:
            raise InvalidParameter(
                f"keep_finished_seconds: must be a positive number (got {keep_finished_seconds!r})"
            )
        self._keep_finished = keep_finished
        self._keep_finished_bytes = keep_finished_bytes
        self._keep_finished_seconds = keep_finished_seconds
        self._clock = clock
        self._persistence = persistence
        self._closed = False
        self._lock = threading.Lock()
        self._records: dict[str, _Record] = {}
        # Finished jobs in finishing order, with the bytes each holds and when it finished;
        # `_finished_bytes` is their sum.
        self._finished: deque[tuple[str, int, float]] = deque()
        self._finished_bytes = 0
        if persistence is not None:
            with self._lock:
                self._load(persistence)

    @property
    def durable(self) -> bool:
        return self._persistence is not None

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for record in self._records.values():
                record.changed.notify_all()
            if self._persistence is not None:
                self._persistence.close()

    def _load(self, persistence: Persistence) -> None:
        unfinished = []
        for job, history in persistence.load():
            record = self._records[job.id] = _Record(job, threading.Condition(self._lock), history)
            if job.status == "succeeded":  # its snapshot is not plain data: attach the loaded job
                record.history[-1] = dataclasses.replace(record.history[-1], snapshot=job)
            if job.done:
                self._finished.append((job.id, job.held_bytes, job.finished_at or 0.0))
                self._finished_bytes += job.held_bytes
            else:
                unfinished.append(record)
        self._finished = deque(sorted(self._finished, key=lambda entry: entry[2]))
        position = 0
        for record in unfinished:
            if record.job.cancel_requested:
                record.job = record.job.finish("cancelled", at=self._clock())
                self._finished_now(record)
                continue
            if record.job.status == "running":
                record.job = record.job.requeue()
            position += 1
            self._append(record, Queued(job_id=record.job.id, position=position))
        self._evict()

    # ---- jobs -------------------------------------------------------------------------------------

    def add(self, job: Job, event: Event) -> None:
        with self._lock:
            if self._closed:
                return
            if job.id in self._records:
                raise InvalidParameter(f"job {job.id}: already in the store")
            record = self._records[job.id] = _Record(job, threading.Condition(self._lock))
            self._append(record, event)

    def get(self, job_id: str) -> Job:
        with self._lock:
            self._evict()
            return self._record(job_id).job

    def jobs(self) -> list[Job]:
        with self._lock:
            self._evict()
            return [record.job for record in self._records.values()]  # admission order

    def counts(self) -> dict[str, int]:
        with self._lock:
            self._evict()
            counts = dict.fromkeys(STATUSES, 0)
            for record in self._records.values():
                counts[record.job.status] += 1
            return counts

    def start(self, job_id: str, *, at: float) -> Job | None:
        with self._lock:
            record = self._records.get(job_id)
            if self._closed or record is None or record.job.status != "queued":
                return None
            record.job = record.job.start(at=at)
            self._append(record, Started(job_id=job_id))
            return record.job

    def advance(self, job_id: str, event: Progress, *, preview: str | None = None) -> None:
        with self._lock:
            record = self._records.get(job_id)
            if self._closed or record is None or record.job.status != "running":
                return
            record.job = record.job.advance(event.progress)
            seq = self._append(record, event)
            if preview is not None:
                record.previews.append((seq, preview))  # keyed by the seq of its progress event

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        *,
        at: float,
        error: str | None = None,
        result: JobResult | None = None,
    ) -> Job | None:
        if self._persistence is not None and result is not None and not self._closed:
            result = self._persistence.keep_images(job_id, result)  # on disk before it is recorded
        with self._lock:
            record = self._records.get(job_id)
            if self._closed or record is None or record.job.done:
                if self._persistence is not None and result is not None and record is None:
                    self._persistence.forget_images(job_id)  # evicted meanwhile
                return None
            record.job = record.job.finish(status, at=at, error=error, result=result)
            self._finished_now(record)
            return record.job

    def request_cancel(self, job_id: str, *, at: float) -> Job:
        with self._lock:
            record = self._record(job_id)
            if self._closed:
                return record.job
            before = record.job
            record.job = before.request_cancel(at=at)
            if record.job.done and not before.done:
                self._finished_now(record)
            elif record.job != before and self._persistence is not None:
                self._persistence.write(record.job, None)  # the flag, for a restart to honour
            return record.job

    def cancel_requested(self, job_ids: Iterable[str]) -> set[str]:
        with self._lock:
            flagged = set()
            for job_id in job_ids:
                record = self._records.get(job_id)
                if self._closed or record is None or record.job.cancel_requested or record.job.done:
                    flagged.add(job_id)
            return flagged

    def publish(self, job_id: str, event: Event) -> None:
        with self._lock:
            record = self._records.get(job_id)
            if record is not None and not self._closed:
                self._append(record, event)

    def wants_previews(self, job_id: str) -> bool:
        with self._lock:
            record = self._records.get(job_id)
            return record is not None and record.preview_watchers > 0

    def image(self, job_id: str, index: int) -> bytes:
        with self._lock:
            self._evict()
            job = self._record(job_id).job
        if job.result is None:
            raise NoResult(f"job {job_id} has no images: it is {job.status}")
        images = job.result.images
        if not checks.is_integer(index) or not 0 <= index < len(images):
            raise IndexOutOfRange(f"index: must be an integer in [0, {len(images) - 1}] (got {index!r})")
        return images[index].png

    # ---- waiting ----------------------------------------------------------------------------------

    def wait(self, job_id: str, *, timeout: float | None) -> Job:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            record = self._record(job_id)  # kept: the job may be evicted while we wait
            record.watchers += 1
            try:
                while not record.job.done and not self._closed:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        break
                    record.changed.wait(remaining)
                return record.job
            finally:
                self._unwatch(record)

    def watchers(self, job_id: str) -> int:
        """Active `wait` calls and `events` subscriptions (each from its first read until it ends or is
        closed) on the job; `JobNotFound` for an unknown or evicted id."""
        with self._lock:
            return self._record(job_id).watchers

    def events(
        self,
        job_id: str,
        *,
        previews: bool = False,
        after: int | None = None,
        timeout: float | None = None,
        heartbeat: float | None = None,
    ) -> Iterator[Event]:
        """Every event of the job after `after` (a `seq`; None: from the first), history then live.

        Ends after the job's final event (a `Succeeded` carries the finished job as `snapshot`).
        `previews`: attach preview PNGs to progress events (and make the worker render them).
        `timeout`: seconds the whole subscription may take before `TimeoutError` (None: no limit).
        `heartbeat`: yield a `Heartbeat` after that many seconds without an event (None: never).
        Raises `JobNotFound` here, at the call, for an unknown id; the subscription holds the job
        from then on, so it can be read to its end even if the job is evicted meanwhile.
        """
        check_waits(timeout=timeout, heartbeat=heartbeat)
        with self._lock:
            record = self._record(job_id)
        start = 0 if after is None else max(0, after + 1)
        return self._follow(record, start=start, previews=previews, timeout=timeout, heartbeat=heartbeat)

    def _follow(
        self, record: _Record, *, start: int, previews: bool, timeout: float | None, heartbeat: float | None
    ) -> Iterator[Event]:
        # Holding the record (not the id) lets a subscriber finish reading a job evicted meanwhile.
        cursor = start
        now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        quiet_since = now
        with self._lock:
            record.watchers += 1
            if previews:
                record.preview_watchers += 1
        try:
            while True:
                beat = False
                with self._lock:
                    while cursor >= len(record.history):
                        if record.history and record.history[-1].terminal:
                            return  # resumed at or past the final event: nothing more will come
                        if self._closed:
                            return  # this process stopped; the job goes on in the next one
                        now = time.monotonic()
                        if deadline is not None and now >= deadline:
                            raise WaitTimeout(f"job {record.job.id}: no final event within {timeout:g} s")
                        if heartbeat is not None and now >= quiet_since + heartbeat:
                            beat = True
                            break
                        wake = [
                            t
                            for t in (deadline, None if heartbeat is None else quiet_since + heartbeat)
                            if t is not None
                        ]
                        record.changed.wait(min(wake) - now if wake else None)
                    pending = record.history[cursor:]
                    kept_previews = dict(record.previews) if previews else {}
                if beat:
                    quiet_since = time.monotonic()
                    yield Heartbeat(job_id=record.job.id)
                    continue
                # Yield outside the lock: the consumer may be slow (a network write).
                for event in pending:
                    cursor = event.seq + 1
                    if event.seq in kept_previews:
                        event = dataclasses.replace(event, preview=kept_previews[event.seq])
                    yield event
                    if event.terminal:
                        return
                quiet_since = time.monotonic()
        finally:
            with self._lock:
                if previews:
                    record.preview_watchers -= 1
                    if not record.preview_watchers and record.job.done:
                        record.previews.clear()
                self._unwatch(record)

    # ---- internals (call with the lock held) ------------------------------------------------------

    def _record(self, job_id: str) -> _Record:
        record = self._records.get(job_id)
        if record is None:
            raise JobNotFound(f"no job {job_id!r} (unknown, or finished and no longer kept)")
        return record

    def _append(self, record: _Record, event: Event) -> int:
        """Append with the next seq and wake the job's waiters; nothing is appended after a final event."""
        if record.history and record.history[-1].terminal:
            return record.history[-1].seq
        seq = len(record.history)
        event = dataclasses.replace(event, seq=seq)
        record.history.append(event)
        if self._persistence is not None:
            self._persistence.write(record.job, event)
        record.changed.notify_all()
        return seq

    def _unwatch(self, record: _Record) -> None:
        record.watchers -= 1
        if record.evicted and not record.watchers and self._persistence is not None and not self._closed:
            self._persistence.forget_images(record.job.id)

    def _finished_now(self, record: _Record) -> None:
        job = record.job
        self._append(record, final_event(job))
        if not record.preview_watchers:  # else the last watcher to leave drops them
            record.previews.clear()
        held = job.held_bytes
        self._finished.append((job.id, held, job.finished_at or self._clock()))
        self._finished_bytes += held
        self._evict()

    def _evict(self) -> None:
        """Evict the oldest finished jobs until the bounds hold; past the count and byte bounds never
        the job that finished last (its client has yet to fetch it)."""
        expired = self._clock() - self._keep_finished_seconds
        while self._finished and (
            len(self._finished) > self._keep_finished
            or (self._finished_bytes > self._keep_finished_bytes and len(self._finished) > 1)
            or self._finished[0][2] <= expired
        ):
            evicted, evicted_bytes, _ = self._finished.popleft()
            self._finished_bytes -= evicted_bytes
            record = self._records.pop(evicted, None)
            if record is not None and self._persistence is not None and not self._closed:
                record.evicted = record.watchers > 0
                self._persistence.forget(evicted, images=not record.evicted)
