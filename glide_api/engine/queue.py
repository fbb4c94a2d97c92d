"""Bounded admission: the jobs waiting for the device, oldest first, and how batches are cut from them.

The queue holds only references (job id, the batch settings, the image count); the job itself lives
in the store. `put` refuses at once when `max_jobs` are waiting: it never blocks a caller. `take`
is the worker's blocking call: it waits (on a condition, no polling) for the oldest job and,
with batching on, adds the compatible jobs behind it.

Locking: one condition guards the queue. `put` calls its `on_admit` callback while holding it, so
the lock order is always queue -> store; the store never calls into the queue.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import EngineClosed, InvalidParameter, QueueFull
from ..pipeline.params import BatchSettings


@dataclass(frozen=True)
class QueueEntry:
    """A waiting job as the queue sees it. Jobs with equal `settings` may share a sampling batch."""

    job_id: str
    settings: BatchSettings
    images: int


class JobQueue:
    """FIFO of waiting jobs, at most `max_jobs` long.

    `retry_after` estimates, in seconds, when a refused caller should try again (see `QueueFull`).
    """

    def __init__(self, *, max_jobs: int, retry_after: Callable[[], float]) -> None:
        if max_jobs < 1:
            raise InvalidParameter(f"max_jobs: must be at least 1 (got {max_jobs!r})")
        self._max_jobs = max_jobs
        self._retry_after = retry_after
        self._cond = threading.Condition()
        self._entries: dict[str, QueueEntry] = {}  # insertion order is FIFO order
        self._reported: dict[str, int] = {}  # job id -> the position its owner was last told
        self._closed = False

    def __len__(self) -> int:
        with self._cond:
            return len(self._entries)

    @property
    def max_jobs(self) -> int:
        return self._max_jobs

    def put(self, entry: QueueEntry, *, on_admit: Callable[[int], None] | None = None) -> int:
        """Append `entry`; returns its 1-based position. Never blocks.

        `on_admit(position)` runs before the entry becomes visible to `take`, so whatever it records
        (the job and its `queued` event) is in place before the worker can start the job. If it
        raises, nothing is queued.

        Raises `QueueFull` (with a retry hint) when `max_jobs` are waiting, `EngineClosed` after
        `close()`.
        """
        with self._cond:
            if self._closed:
                raise EngineClosed("the engine is shut down and takes no new jobs")
            if len(self._entries) >= self._max_jobs:
                retry_after = max(1, math.ceil(self._retry_after()))
                raise QueueFull(
                    f"the queue is full ({self._max_jobs} jobs waiting); retry in about {retry_after} s",
                    retry_after=retry_after,
                )
            position = len(self._entries) + 1
            if on_admit is not None:
                on_admit(position)
            self._entries[entry.job_id] = entry
            self._reported[entry.job_id] = position
            self._cond.notify_all()
            return position

    def restore(self, entry: QueueEntry) -> None:
        """Append a job admitted earlier (by a process that stopped), even past `max_jobs`."""
        with self._cond:
            self._entries[entry.job_id] = entry
            self._reported[entry.job_id] = len(self._entries)
            self._cond.notify_all()

    def take(self, *, max_images: int, batching: bool) -> list[QueueEntry] | None:
        """Block until a job waits, then remove and return the next batch; None once closed.

        The batch starts with the oldest job. With `batching`, later jobs whose settings equal its
        settings join in FIFO order while the batch stays within `max_images` images; a job that
        would overflow it is skipped (it stays queued, and being older it heads a later batch).
        """
        with self._cond:
            while not self._entries and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            entries = iter(list(self._entries.values()))
            first = next(entries)
            batch, images = [first], first.images
            if batching:
                for entry in entries:
                    if entry.settings == first.settings and images + entry.images <= max_images:
                        batch.append(entry)
                        images += entry.images
                    if images >= max_images:
                        break
            for entry in batch:
                del self._entries[entry.job_id]
                self._reported.pop(entry.job_id, None)
            return batch

    def remove(self, job_id: str) -> bool:
        """Drop a waiting job (it was cancelled); False if it is not waiting."""
        with self._cond:
            self._reported.pop(job_id, None)
            return self._entries.pop(job_id, None) is not None

    def report_moves(self, tell: Callable[[str, int], None]) -> None:
        """Call `tell(job_id, position)` for each waiting job whose position changed since it was last
        told (taken or cancelled jobs ahead of it). Runs under the queue's lock, so positions reach a
        job in order even when two threads report at once.
        """
        with self._cond:
            for position, job_id in enumerate(self._entries, start=1):
                if self._reported.get(job_id) != position:
                    tell(job_id, position)
                    self._reported[job_id] = position

    def close(self) -> list[QueueEntry]:
        """Refuse new jobs, wake the worker (its `take` returns None) and return the waiting jobs."""
        with self._cond:
            self._closed = True
            left = list(self._entries.values())
            self._entries.clear()
            self._reported.clear()
            self._cond.notify_all()
            return left
