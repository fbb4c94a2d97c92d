"""The shared queue on Redis as the engine sees it, and the workers' presence.

`RedisQueue` stands in for `JobQueue`. In an API replica it only admits (`put`, through the store's
admission script); in a worker, `take` reads the stream `glide:queue` as one consumer of the group
`workers`, so each entry goes to one worker, and an entry stays pending (unacknowledged) until its
job is finished: at-least-once. Batches are cut as `JobQueue` cuts them: the oldest job, then the
compatible ones read after it, up to this worker's fair share of the waiting jobs among the live
workers; the first incompatible one read heads this worker's next batch.

`WorkerPresence` is a worker's heartbeat thread. Every `claim_timeout / 3` seconds it renews the
worker's record (`glide:worker:<id>`, expiring after `claim_timeout`: `GET /v1/workers` lists the
live ones) and resets the idle time of the entries it holds. A worker that stops (kill -9, power
loss) stops renewing them; once an entry has been idle `claim_timeout` seconds, the next worker to
look claims it (XAUTOCLAIM), moves its job back to queued with a new attempt (the dead attempt's
writes are fenced off) and runs it. An entry delivered more than `max_attempts` times (its job
killed its worker again and again) ends its job `failed`, saying so.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import ResponseError

from ..errors import EngineClosed, InvalidParameter, StoreUnavailable
from .queue import QueueEntry
from .redis_store import GROUP, POLL_SECONDS, RedisJobStore, RedisLink

logger = logging.getLogger(__name__)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisQueue:
    """`JobQueue`'s part for a fleet on one Redis. `consumer`: this worker's id (None in a replica,
    which never takes)."""

    shared = True  # the engine restores nothing itself: the queue outlives every process

    def __init__(
        self,
        store: RedisJobStore,
        *,
        max_jobs: int,
        consumer: str | None = None,
        claim_timeout: float = 30.0,
        max_attempts: int = 3,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._link = store.link
        self._r = self._link.client
        self._max_jobs = max_jobs
        self._consumer = consumer
        self._claim_timeout = claim_timeout
        self._max_attempts = max_attempts
        self._wall_clock = wall_clock
        self._next: tuple[str, QueueEntry] | None = None  # read, and heads the next batch
        self._claimed: list[tuple[str, QueueEntry]] = []  # taken from dead workers, oldest first
        self._closed = threading.Event()
        if consumer is not None:
            self._ensure_group()

    @property
    def max_jobs(self) -> int:
        return self._max_jobs

    def __len__(self) -> int:
        return self._store.waiting()

    def _ensure_group(self) -> None:
        try:
            with self._link.guard():
                self._r.xgroup_create(self._link.key("queue"), GROUP, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    # ---- a replica's part -------------------------------------------------------------------------

    def put(self, entry: QueueEntry, *, on_admit: Callable[[int], None] | None = None) -> int:
        """Admit through `on_admit` (the store's `add`, which checks the fleet-wide bound and writes
        the job, its `Queued` event with the real position, and the queue entry in one script);
        returns the job's position."""
        if self._closed.is_set():
            raise EngineClosed("the engine is shut down and takes no new jobs")
        if on_admit is not None:
            on_admit(0)
        return max(1, self._store.position(entry.job_id))

    def restore(self, entry: QueueEntry) -> None:
        raise InvalidParameter("a shared queue keeps its jobs itself: nothing to restore")

    def remove(self, job_id: str) -> bool:
        """Take a cancelled job out of the waiting set (its stream entry is skipped by the worker
        that reads it); True if it was waiting."""
        with self._link.guard():
            return bool(self._r.zrem(self._link.key("waiting"), job_id))

    def report_moves(self, tell: Callable[[str, int], None]) -> None:
        """Positions are told at admission only: a fleet's queue moves in many processes."""

    def close(self) -> list[QueueEntry]:
        self._closed.set()
        return []

    def hand_back(self) -> None:
        """After the engine closed: put every unfinished job this worker holds back in the queue
        (at its end; a running one as queued, for a new attempt) and acknowledge its old entry, so
        other workers take them now instead of after `claim_timeout`."""
        queue = self._link.key("queue")
        for job_id, entry_id in self._store.held().items():
            try:
                job = self._store.get(job_id)
                if job.status == "running":
                    self._store.requeue(job_id)
                with self._link.guard():
                    pipe = self._r.pipeline()
                    if not job.done:
                        pipe.xadd(queue, {"job": job_id})
                    pipe.xack(queue, GROUP, entry_id)
                    pipe.xdel(queue, entry_id)
                    pipe.execute()
                if not job.done:
                    logger.info("job %s: handed back to the queue (this worker stops)", job_id)
            except Exception as e:  # unreachable Redis, or gone: it is claimed after claim_timeout
                logger.warning("job %s: not handed back (%s); another worker claims it later", job_id, e)

    # ---- a worker's part --------------------------------------------------------------------------

    def take(self, *, max_images: int, batching: bool) -> list[QueueEntry] | None:
        """Block until a job waits (or a dead worker's job can be claimed), then return the next
        batch; None once closed. Redis unreachable: logged, tried again every second."""
        while not self._closed.is_set():
            try:
                first = self._first()
                if first is None:
                    continue
                batch, images = [first], first[1].images
                limit = self._fair_share(max_images)
                while batching and images < limit:
                    more = self._read(block_ms=None)
                    if more is None:
                        break
                    if more[1].settings != first[1].settings or images + more[1].images > limit:
                        self._next = more
                        break
                    batch.append(more)
                    images += more[1].images
                return [entry for _, entry in batch]
            except StoreUnavailable as e:
                logger.warning("worker %s: %s; trying again in 1 s", self._consumer, e)
                self._closed.wait(1.0)
        return None

    def _fair_share(self, max_images: int) -> int:
        """The images this worker's batch may take: its share of the waiting jobs among the live
        workers (so a worker does not take eight jobs while another one idles), within `max_images`."""
        now = time.time()
        with self._link.guard():
            pipe = self._r.pipeline(transaction=False)
            pipe.zcard(self._link.key("waiting"))
            pipe.zcount(self._link.key("workers"), now - self._claim_timeout, "+inf")
            waiting, live = pipe.execute()
        return max(1, min(max_images, math.ceil(waiting / max(1, live))))

    def _first(self) -> tuple[str, QueueEntry] | None:
        if self._next is not None:
            first, self._next = self._next, None
            return first
        self.claim()
        if self._claimed:
            return self._claimed.pop(0)
        return self._read(block_ms=int(POLL_SECONDS * 1000))

    def _read(self, *, block_ms: int | None) -> tuple[str, QueueEntry] | None:
        """The next new entry of the stream for this consumer (waiting up to `block_ms`; None: do
        not wait), skipping those whose job is no longer queued."""
        while True:
            with self._link.guard():
                read = self._r.xreadgroup(
                    GROUP, self._consumer, {self._link.key("queue"): ">"}, count=1, block=block_ms
                )
            if not read or not read[0][1]:
                return None
            entry_id, fields = read[0][1][0]
            entry = self._entry(_text(entry_id), _text(fields[b"job"]))
            if entry is not None:
                return entry
            block_ms = None  # skipped one: look for the next without waiting again

    def _entry(self, entry_id: str, job_id: str) -> tuple[str, QueueEntry] | None:
        """The queue entry for a job read from the stream, or None (acknowledged) if it is not to run."""
        try:
            job = self._store.get(job_id)
        except Exception:  # unknown (its admission never completed) or expired
            job = None
        if job is None or job.status != "queued":
            self._ack(entry_id, job_id)
            return None
        request = job.generation_request()
        self._store.hold(job_id, entry_id)  # heartbeats keep it ours from now on
        return entry_id, QueueEntry(job_id, request.settings, request.batch_size)

    def _ack(self, entry_id: str, job_id: str) -> None:
        queue = self._link.key("queue")
        with self._link.guard():
            pipe = self._r.pipeline()
            pipe.xack(queue, GROUP, entry_id)
            pipe.xdel(queue, entry_id)
            pipe.zrem(self._link.key("waiting"), job_id)
            pipe.execute()

    def claim(self) -> None:
        """Claim the entries other workers left idle for `claim_timeout` seconds (they stopped):
        their jobs go back to queued for a new attempt, or end failed past `max_attempts`."""
        queue = self._link.key("queue")
        with self._link.guard():
            _, claimed, *_ = self._r.xautoclaim(
                queue, GROUP, self._consumer, min_idle_time=int(self._claim_timeout * 1000), count=16
            )
        for entry_id, fields in claimed:
            if not fields:
                continue  # deleted meanwhile
            entry_id, job_id = _text(entry_id), _text(fields[b"job"])
            with self._link.guard():
                pending = self._r.xpending_range(queue, GROUP, min=entry_id, max=entry_id, count=1)
            deliveries = pending[0]["times_delivered"] if pending else 1
            try:
                job = self._store.get(job_id)
            except Exception:
                job = None
            if job is None or job.done:
                self._ack(entry_id, job_id)
                continue
            if deliveries - 1 > self._max_attempts:
                logger.error("job %s: its worker stopped %d times while running it", job_id, deliveries - 1)
                self._store.hold(job_id, entry_id)
                self._store.finish(
                    job_id,
                    "failed",
                    at=self._wall_clock(),
                    error=f"its worker stopped (killed, or out of memory) {deliveries - 1} times while "
                    f"running it; not tried again (the server's max_attempts is {self._max_attempts})",
                )
                continue
            if job.status == "running":
                self._store.requeue(job_id)
                logger.warning(
                    "job %s: claimed from a worker that stopped (attempt %d of %d)",
                    job_id,
                    deliveries,
                    self._max_attempts,
                )
            found = self._entry(entry_id, job_id)
            if found is not None:
                self._claimed.append(found)


class WorkerPresence:
    """A worker's heartbeat (see the module docstring): renews its record and its held entries."""

    def __init__(
        self,
        store: RedisJobStore,
        *,
        worker_id: str,
        claim_timeout: float,
        describe: Callable[[], dict[str, Any]],
        current: Callable[[], list[str]],
    ) -> None:
        self._store = store
        self._link = store.link
        self._r = self._link.client
        self.worker_id = worker_id
        self._claim_timeout = claim_timeout
        self._describe = describe
        self._current = current
        self._started = time.time()
        self._stop = threading.Event()
        self._poked = threading.Event()
        self._thread = threading.Thread(target=self._run, name="glide-worker-heartbeat", daemon=True)

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def poke(self) -> None:
        """Beat now (its current jobs changed), not at the next period."""
        self._poked.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._poked.wait(self._claim_timeout / 3)
            self._poked.clear()
            if self._stop.is_set():
                return
            try:
                self.beat()
            except StoreUnavailable as e:
                logger.warning("worker %s: heartbeat missed: %s", self.worker_id, e)

    def beat(self) -> None:
        now = time.time()
        record = {
            "id": self.worker_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": self._started,
            "heartbeat_at": now,
            "current_jobs": self._current(),
            **self._describe(),
        }
        queue = self._link.key("queue")
        held = list(self._store.held().values())
        with self._link.guard():
            pipe = self._r.pipeline(transaction=False)
            key = self._link.key(f"worker:{self.worker_id}")
            pipe.set(key, json.dumps(record), ex=math.ceil(self._claim_timeout))
            pipe.zadd(self._link.key("workers"), {self.worker_id: now})
            if held:
                pipe.xclaim(queue, GROUP, self.worker_id, min_idle_time=0, message_ids=held, justid=True)
            pipe.execute()

    def stop(self) -> None:
        """Stop beating and remove the record (the held entries are claimed by others in time)."""
        self._stop.set()
        self._poked.set()
        try:
            with self._link.guard():
                self._r.delete(self._link.key(f"worker:{self.worker_id}"))
                self._r.zrem(self._link.key("workers"), self.worker_id)
        except StoreUnavailable:
            pass


def live_workers(link: RedisLink) -> list[dict[str, Any]]:
    """The records of the workers whose heartbeat is current, oldest first."""
    workers = link.key("workers")
    with link.guard():
        ids = [_text(i) for i in link.client.zrange(workers, 0, -1)]
        records = link.client.mget([link.key(f"worker:{i}") for i in ids]) if ids else []
        gone = [i for i, record in zip(ids, records, strict=True) if record is None]
        if gone:
            link.client.zrem(workers, *gone)
    return [json.loads(record) for record in records if record is not None]
