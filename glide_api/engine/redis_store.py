"""The distributed engine's shared state on Redis: jobs, their events and images, and the queue.

API replicas (`glide-api serve --queue redis://…`) and workers (`glide-api worker`) all use one
Redis. Every key is under `glide:`:

    job:<id>                 hash: record (the job as JSON, uploads apart), inputs (the uploads
                             until it finishes), next (the next event seq), attempt (how many times
                             a worker started it), entry (its queue stream entry)
    job:<id>:events          stream: its events, entry id "<seq + 1>-0" (so a Last-Event-ID maps to
                             a stream position on every replica); field e (the event), p (a
                             `queued` position)
    job:<id>:images          hash: image index -> PNG bytes, once it succeeded
    job:<id>:previews        hash: progress seq -> base64 preview; the last PREVIEWS_KEPT only
    job:<id>:wants-previews  set while a subscriber that asked for previews reads (expires)
    job:<id>:watchers        sorted set: subscriber token -> when its lease ends
    jobs                     sorted set: every job held, by admission order (`admitted` counts)
    waiting                  sorted set: the jobs admitted and not yet started (the bounded queue)
    finished                 sorted set: finished jobs by finishing time; finished-bytes: their
                             payload bytes (retention by count, bytes and age)
    queue                    stream of job ids, read by the consumer group `workers`

The connection and the key names are `RedisLink`'s (`glide_api/redis_link.py`); the webhook outbox
beside these keys (`job:<id>:webhook*`, `webhooks:*`) is `webhooks/redis_outbox.py`'s.

Admission is one Lua script (the bound, the job, its first event and its queue entry, or nothing).
Every other change is an optimistic transaction (WATCH the job's hash, apply `Job`'s own transition,
MULTI/EXEC), so two writers never lose each other's change. A worker's writes are fenced: its store
remembers the `attempt` it started each job at, and a write is dropped once the job's attempt moved
on (another worker claimed it after this one's heartbeat stopped), so a stale worker can never
overwrite the newer attempt's state. Subscriptions read the event stream with blocking reads of at
most `POLL_SECONDS`, so they notice `close()` and renew their watcher lease that often.

Finished jobs get `expire` times from `keep_finished_seconds`; the count and byte bounds evict the
oldest finished jobs when a job finishes, as in `MemoryJobStore` (never the last one finished).
Redis unreachable: every call raises `StoreUnavailable` (HTTP 503) and redis-py connects again on
the next call.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from redis.exceptions import WatchError

from .. import checks
from ..errors import (
    IndexOutOfRange,
    InvalidParameter,
    JobNotFound,
    NoResult,
    QueueFull,
    StoreUnavailable,
    WaitTimeout,
)
from ..pipeline.params import INPUT_FIELDS
from ..redis_link import POLL_SECONDS, RedisLink
from .events import Event, Heartbeat, Progress, Queued, Started, Succeeded, event_from_dict
from .jobs import STATUSES, Job, JobResult, JobStatus
from .store import PREVIEWS_KEPT, WEEK, check_waits, final_event

logger = logging.getLogger(__name__)

GROUP = "workers"  # the queue stream's consumer group
WATCH_LEASE = 5.0  # seconds a subscriber's watcher entry lasts unless renewed
RETRY_FULL = 5  # Retry-After when the shared queue is full
WRITE_PATIENCE = 30.0  # seconds a worker keeps trying a start or a final write while Redis is away

_ADMIT = """
if redis.call('EXISTS', KEYS[3]) == 1 then return -2 end
local waiting = redis.call('ZCARD', KEYS[1])
if waiting >= tonumber(ARGV[1]) then return -1 end
local order = redis.call('INCR', KEYS[6])
redis.call('ZADD', KEYS[1], order, ARGV[2])
redis.call('ZADD', KEYS[2], order, ARGV[2])
local entry = redis.call('XADD', KEYS[5], '*', 'job', ARGV[2])
redis.call('HSET', KEYS[3], 'record', ARGV[3], 'inputs', ARGV[4], 'next', 1, 'attempt', 0, 'entry', entry)
redis.call('XADD', KEYS[4], '1-0', 'e', ARGV[5], 'p', waiting + 1)
return waiting + 1
"""


def _stream_id(seq: int) -> str:
    return f"{seq + 1}-0"


def _seq(stream_id: bytes | str) -> int:
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    return int(text.split("-", 1)[0]) - 1


def _split_record(job: Job) -> tuple[str, str]:
    """The job's record without its uploads, and the uploads (written once, not on every step)."""
    record = job.to_record()
    inputs = {name: record["request"].get(name) for name in INPUT_FIELDS}
    record["request"].update(dict.fromkeys(INPUT_FIELDS))
    return json.dumps(record), json.dumps(inputs if any(inputs.values()) else {})


class RedisJobStore:
    """`JobStore` on Redis, shared by every replica and worker (see the module docstring).

    `max_queue` bounds the jobs waiting across the whole fleet (`add` raises `QueueFull`); the
    `keep_finished*` bounds are the fleet's too.
    """

    def __init__(
        self,
        link: RedisLink,
        *,
        max_queue: int,
        keep_finished: int,
        keep_finished_bytes: int,
        keep_finished_seconds: float = WEEK,
        clock: Callable[[], float] = time.time,
    ) -> None:
        for name, value in (
            ("max_queue", max_queue),
            ("keep_finished", keep_finished),
            ("keep_finished_bytes", keep_finished_bytes),
        ):
            checks.integer(name, value, minimum=1)
        if not checks.is_number(keep_finished_seconds) or not keep_finished_seconds > 0:
            raise InvalidParameter(
                f"keep_finished_seconds: must be a positive number (got {keep_finished_seconds!r})"
            )
        self._link = link
        self._r = link.client
        self._max_queue = max_queue
        self._keep_finished = keep_finished
        self._keep_finished_bytes = keep_finished_bytes
        self._keep_finished_seconds = keep_finished_seconds
        self._clock = clock
        self._admit = self._r.register_script(_ADMIT)
        self._attempts: dict[str, int] = {}  # job id -> the attempt this process started it at
        self._entries: dict[str, str] = {}  # job id -> the queue entry this worker holds for it
        self._tokens: dict[str, set[str]] = {}  # job id -> this process's watcher tokens on it
        self._lock = threading.Lock()  # guards `_tokens` (subscriptions run on many threads)
        self._closed = False

    @property
    def link(self) -> RedisLink:
        return self._link

    @property
    def durable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True  # waits and subscriptions end within POLL_SECONDS

    # ---- reading ----------------------------------------------------------------------------------

    def _decode(self, job_id: str, record: bytes, inputs: bytes | None) -> Job:
        data = json.loads(record)
        if inputs:
            data["request"].update(json.loads(inputs))
        images = self._link.job(job_id, "images")

        def read_of(index: int) -> Callable[[], bytes]:
            def read() -> bytes:
                with self._link.guard():
                    png = self._r.hget(images, index)
                if png is None:
                    raise JobNotFound(f"no job {job_id!r} (unknown, or finished and no longer kept)")
                return png

            return read

        return Job.from_record(data, read_of=read_of)

    def get(self, job_id: str) -> Job:
        with self._link.guard():
            record, inputs = self._r.hmget(self._link.job(job_id), "record", "inputs")
        if record is None:
            raise JobNotFound(f"no job {job_id!r} (unknown, or finished and no longer kept)")
        return self._decode(job_id, record, inputs)

    def jobs(self) -> list[Job]:
        with self._link.guard():
            ids = [i.decode() for i in self._r.zrange(self._link.key("jobs"), 0, -1)]
            pipe = self._r.pipeline(transaction=False)
            for job_id in ids:
                pipe.hmget(self._link.job(job_id), "record", "inputs")
            rows = pipe.execute()
            gone = [job_id for job_id, (record, _) in zip(ids, rows, strict=True) if record is None]
            if gone:  # expired by age
                self._r.zrem(self._link.key("jobs"), *gone)
        return [self._decode(i, rec, inp) for i, (rec, inp) in zip(ids, rows, strict=True) if rec is not None]

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for job in self.jobs():
            counts[job.status] += 1
        return counts

    def waiting(self) -> int:
        """Jobs admitted and not yet started, over the whole fleet."""
        with self._link.guard():
            return int(self._r.zcard(self._link.key("waiting")))

    def image(self, job_id: str, index: int) -> bytes:
        job = self.get(job_id)
        if job.result is None:
            raise NoResult(f"job {job_id} has no images: it is {job.status}")
        images = job.result.images
        if not checks.is_integer(index) or not 0 <= index < len(images):
            raise IndexOutOfRange(f"index: must be an integer in [0, {len(images) - 1}] (got {index!r})")
        return images[index].png

    # ---- admission --------------------------------------------------------------------------------

    def add(self, job: Job, event: Event) -> None:
        """Admit the job: within `max_queue` waiting jobs fleet-wide, its record, its first event
        (`event`, a `Queued` whose position the script fills in) and its queue entry, atomically."""
        record, inputs = _split_record(job)
        keys = [
            self._link.key("waiting"),
            self._link.key("jobs"),
            self._link.job(job.id),
            self._link.job(job.id, "events"),
            self._link.key("queue"),
            self._link.key("admitted"),
        ]
        with self._link.guard():
            position = self._admit(
                keys, [self._max_queue, job.id, record, inputs, json.dumps(event.to_dict())]
            )
        if position == -2:
            raise InvalidParameter(f"job {job.id}: already in the store")
        if position == -1:
            raise QueueFull(
                f"the queue is full ({self._max_queue} jobs waiting across the fleet); retry in about "
                f"{RETRY_FULL} s",
                retry_after=RETRY_FULL,
            )

    def position(self, job_id: str) -> int:
        """The job's 1-based place among the waiting jobs (0 once it left the queue)."""
        with self._link.guard():
            rank = self._r.zrank(self._link.key("waiting"), job_id)
        return 0 if rank is None else rank + 1

    # ---- changes ----------------------------------------------------------------------------------

    def _change(
        self,
        job_id: str,
        plan: Callable[[Job, int], tuple[Job, list[Event]] | None],
        *,
        after: Callable[[Any, Job, int], None] | None = None,
    ) -> Job | None:
        """Apply `plan(job, attempt)` (the new job and the events to append, or None: no change) in an
        optimistic transaction on the job's hash; `after(pipe, job, seq)` (seq: the first appended
        event's) adds writes to the same transaction. Returns the new job, or None when unknown or
        unchanged."""
        key = self._link.job(job_id)
        events_key = self._link.job(job_id, "events")
        with self._link.guard(), self._r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    record, inputs, next_seq, attempt = pipe.hmget(key, "record", "inputs", "next", "attempt")
                    if record is None:
                        pipe.unwatch()
                        return None
                    attempt = int(attempt or 0)
                    planned = plan(self._decode(job_id, record, inputs), attempt)
                    if planned is None:
                        pipe.unwatch()
                        return None
                    job, events = planned
                    seq = int(next_seq or 0)
                    pipe.multi()
                    new_record, new_inputs = _split_record(job)
                    pipe.hset(key, mapping={"record": new_record, "next": seq + len(events)})
                    if job.done:
                        pipe.hdel(key, "inputs")
                    elif new_inputs != "{}" and inputs is None:
                        pipe.hset(key, "inputs", new_inputs)
                    for offset, event in enumerate(events):
                        pipe.xadd(events_key, {"e": json.dumps(event.to_dict())}, id=_stream_id(seq + offset))
                    if after is not None:
                        after(pipe, job, seq)
                    pipe.execute()
                    return job
                except WatchError:
                    continue

    def _fenced(self, job_id: str, attempt: int) -> bool:
        """Whether this process may write the running job: it started it at the job's `attempt`."""
        mine = self._attempts.get(job_id)
        return mine is None or mine == attempt

    def start(self, job_id: str, *, at: float) -> Job | None:
        if self._closed:
            return None
        started: dict[str, int] = {}

        def plan(job: Job, attempt: int) -> tuple[Job, list[Event]] | None:
            if job.status != "queued":
                return None
            started["attempt"] = attempt + 1
            return job.start(at=at), [Started(job_id=job_id)]

        def after(pipe: Any, job: Job, seq: int) -> None:
            pipe.hset(self._link.job(job_id), "attempt", started["attempt"])
            pipe.zrem(self._link.key("waiting"), job_id)

        try:
            job = self._patiently(job_id, "start", lambda: self._change(job_id, plan, after=after))
        except StoreUnavailable:
            return None  # not started; its entry is claimed by a worker later
        if job is None:
            self.release(job_id)  # cancelled (or finished) meanwhile: nothing to run
        else:
            self._attempts[job_id] = started["attempt"]
        return job

    def _patiently(self, job_id: str, what: str, write: Callable[[], Job | None]) -> Job | None:
        """A worker's write that must not be lost to a Redis restart: tried again for up to
        `WRITE_PATIENCE` seconds. If Redis is still away, the job is let go (its entry is no longer
        renewed, so a worker claims it after `claim_timeout`: the job runs again) and the error
        raised."""
        deadline = time.monotonic() + WRITE_PATIENCE
        while True:
            try:
                return write()
            except StoreUnavailable as e:
                if self._closed or time.monotonic() > deadline:
                    logger.error(
                        "job %s: could not %s it (%s); it is left for another attempt", job_id, what, e
                    )
                    self._entries.pop(job_id, None)
                    self._attempts.pop(job_id, None)
                    raise
                logger.warning("job %s: could not %s it yet (%s); trying again", job_id, what, e)
                time.sleep(0.5)

    def requeue(self, job_id: str) -> Job | None:
        """A running job whose worker stopped (its heartbeat did) back to queued, for a new attempt;
        the dead attempt's writes are fenced off from now on (`attempt` moves on at the next start)."""

        def plan(job: Job, attempt: int) -> tuple[Job, list[Event]] | None:
            if job.status != "running":
                return None
            self._attempts.pop(job_id, None)
            return job.requeue(), [Queued(job_id=job_id, position=0)]

        def after(pipe: Any, job: Job, seq: int) -> None:
            pipe.hincrby(self._link.job(job_id), "attempt", 1)

        return self._change(job_id, plan, after=after)

    def hold(self, job_id: str, entry: str) -> None:
        """This worker holds the queue entry `entry` for the job: acknowledged when it finishes."""
        self._entries[job_id] = entry

    def held(self) -> dict[str, str]:
        """The queue entries this worker holds, by job id (for its heartbeat and its hand-back)."""
        return dict(self._entries)

    def running_here(self) -> list[str]:
        """The jobs this process started and has not finished."""
        return list(self._attempts)

    def release(self, job_id: str) -> None:
        """Acknowledge (and delete) the entry held for a job this worker will not run."""
        entry = self._entries.pop(job_id, None)
        if entry is not None:
            with self._link.guard():
                self._r.xack(self._link.key("queue"), GROUP, entry)
                self._r.xdel(self._link.key("queue"), entry)

    def attempts(self, job_id: str) -> int:
        """How many times a worker started (or a claim took away) the job."""
        with self._link.guard():
            return int(self._r.hget(self._link.job(job_id), "attempt") or 0)

    def advance(self, job_id: str, event: Progress, *, preview: str | None = None) -> None:
        if self._closed:
            return
        previews = self._link.job(job_id, "previews")

        def plan(job: Job, attempt: int) -> tuple[Job, list[Event]] | None:
            if job.status != "running" or not self._fenced(job_id, attempt):
                return None
            return job.advance(event.progress), [event]

        def after(pipe: Any, job: Job, seq: int) -> None:
            if preview is not None:  # keyed by the seq of its progress event
                pipe.hset(previews, seq, preview)
                pipe.expire(previews, math.ceil(self._keep_finished_seconds))

        try:
            self._change(job_id, plan, after=after)
            if preview is not None:
                with self._link.guard():
                    kept = sorted(int(k) for k in self._r.hkeys(previews))
                    if len(kept) > PREVIEWS_KEPT:
                        self._r.hdel(previews, *kept[:-PREVIEWS_KEPT])
        except StoreUnavailable as e:  # progress is a nicety: the run goes on; the next step tells
            logger.warning("job %s: progress not recorded: %s", job_id, e)

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        *,
        at: float,
        error: str | None = None,
        result: JobResult | None = None,
    ) -> Job | None:
        if self._closed:
            return None

        def plan(job: Job, attempt: int) -> tuple[Job, list[Event]] | None:
            if job.done or not self._fenced(job_id, attempt):
                return None
            done = job.finish(status, at=at, error=error, result=result)
            return done, [final_event(done)]

        def after(pipe: Any, job: Job, seq: int) -> None:
            if result is not None:
                pipe.hset(
                    self._link.job(job_id, "images"),
                    mapping={i: im.png for i, im in enumerate(result.images)},
                )
            pipe.zrem(self._link.key("waiting"), job_id)
            self._retain(pipe, job, at)
            entry = self._entries.pop(job_id, None)
            if entry is not None:  # this worker's queue entry for it: done with
                pipe.xack(self._link.key("queue"), GROUP, entry)
                pipe.xdel(self._link.key("queue"), entry)

        try:
            job = self._patiently(
                job_id, f"record the {status} of", lambda: self._change(job_id, plan, after=after)
            )
        except StoreUnavailable:
            return None
        self._attempts.pop(job_id, None)
        if job is not None:
            try:
                self._evict()
                if job.status == "succeeded":  # its images are in Redis now, read on demand
                    job = self.get(job_id)
            except StoreUnavailable as e:  # recorded; eviction waits for the next finish
                logger.warning("job %s: finished, but retention could not run: %s", job_id, e)
        return job

    def _retain(self, pipe: Any, job: Job, at: float) -> None:
        """In a finishing job's transaction: count it among the finished, and let its keys expire
        `keep_finished_seconds` from now."""
        pipe.zadd(self._link.key("finished"), {job.id: job.finished_at or at})
        pipe.hset(self._link.key("finished-bytes"), job.id, job.held_bytes)
        pipe.delete(self._link.job(job.id, "previews"))
        seconds = math.ceil(self._keep_finished_seconds)
        for part in ("", "events", "images", "watchers"):
            pipe.expire(self._link.job(job.id, part), seconds)

    def _evict(self) -> None:
        """Evict the oldest finished jobs until the bounds hold (never the last one finished past
        the count and byte bounds); age is also enforced by the keys' expiry."""
        finished, sizes = self._link.key("finished"), self._link.key("finished-bytes")
        with self._link.guard():
            order = [i.decode() for i in self._r.zrange(finished, 0, -1)]
            stamps = dict(self._r.zrange(finished, 0, -1, withscores=True))
            held = {k.decode(): int(v) for k, v in self._r.hgetall(sizes).items()}
            total = sum(held.get(i, 0) for i in order)
            expired = self._clock() - self._keep_finished_seconds
            evicted = []
            while order and (
                len(order) > self._keep_finished
                or (total > self._keep_finished_bytes and len(order) > 1)
                or stamps.get(order[0].encode(), 0.0) <= expired
            ):
                job_id = order.pop(0)
                total -= held.get(job_id, 0)
                evicted.append(job_id)
            if not evicted:
                return
            pipe = self._r.pipeline()
            pipe.zrem(finished, *evicted)
            pipe.hdel(sizes, *evicted)
            pipe.zrem(self._link.key("jobs"), *evicted)
            for job_id in evicted:
                pipe.delete(*(self._link.job(job_id, part) for part in ("", "events", "images", "previews")))
            pipe.execute()

    def request_cancel(self, job_id: str, *, at: float) -> Job:
        def plan(job: Job, attempt: int) -> tuple[Job, list[Event]] | None:
            after_cancel = job.request_cancel(at=at)
            if after_cancel == job:
                return None
            return after_cancel, [final_event(after_cancel)] if after_cancel.done else []

        def after(pipe: Any, job: Job, seq: int) -> None:
            if job.done:  # it leaves `waiting` by the engine's `queue.remove` (or a worker's take)
                self._retain(pipe, job, at)

        job = self._change(job_id, plan, after=after)
        if job is None:
            return self.get(job_id)  # unchanged (finished or flagged already), or JobNotFound
        if job.done:
            self._evict()
        return job

    def cancel_requested(self, job_ids: Iterable[str]) -> set[str]:
        """Also those whose attempt moved on: another worker runs them now, so this one stops."""
        ids = list(job_ids)
        if self._closed:
            return set(ids)
        try:
            with self._link.guard():
                pipe = self._r.pipeline(transaction=False)
                for job_id in ids:
                    pipe.hmget(self._link.job(job_id), "record", "attempt")
                rows = pipe.execute()
        except StoreUnavailable as e:  # the run goes on; the next step asks again
            logger.warning("jobs %s: cancels not read: %s", ",".join(ids), e)
            return set()
        flagged = set()
        for job_id, (record, attempt) in zip(ids, rows, strict=True):
            if record is None:
                flagged.add(job_id)
                continue
            data = json.loads(record)
            stale = not self._fenced(job_id, int(attempt or 0))
            if data["cancel_requested"] or data["status"] != "running" or stale:
                flagged.add(job_id)
        return flagged

    def publish(self, job_id: str, event: Event) -> None:
        if self._closed:
            return

        def plan(job: Job, attempt: int) -> tuple[Job, list[Event]] | None:
            return None if job.done else (job, [event])

        try:
            self._change(job_id, plan)
        except StoreUnavailable as e:
            logger.warning("job %s: %s event not recorded: %s", job_id, event.type, e)

    def wants_previews(self, job_id: str) -> bool:
        try:
            with self._link.guard():
                return bool(self._r.exists(self._link.job(job_id, "wants-previews")))
        except StoreUnavailable:
            return False

    # ---- waiting ----------------------------------------------------------------------------------

    def wait(self, job_id: str, *, timeout: float | None) -> Job:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._watching(job_id):
            after = "0-0"
            while True:
                job = self.get(job_id)
                remaining = None if deadline is None else deadline - time.monotonic()
                if job.done or self._closed or (remaining is not None and remaining <= 0):
                    return job
                block = POLL_SECONDS if remaining is None else min(POLL_SECONDS, remaining)
                events_key = self._link.job(job_id, "events")
                with self._link.guard():
                    read = self._r.xread({events_key: after}, block=max(1, int(block * 1000)))
                if read:
                    after = read[0][1][-1][0]
                self._renew(job_id)

    @contextmanager
    def _watching(self, job_id: str) -> Iterator[None]:
        token = uuid.uuid4().hex
        with self._lock:
            self._tokens.setdefault(job_id, set()).add(token)
        self._renew(job_id)
        try:
            yield
        finally:
            with self._lock:
                tokens = self._tokens.get(job_id, set())
                tokens.discard(token)
                if not tokens:
                    self._tokens.pop(job_id, None)
            try:
                with self._link.guard():
                    self._r.zrem(self._link.job(job_id, "watchers"), token)
            except StoreUnavailable:
                pass  # its lease runs out by itself

    def _renew(self, job_id: str) -> None:
        key = self._link.job(job_id, "watchers")
        until = time.time() + WATCH_LEASE
        with self._lock:
            tokens = list(self._tokens.get(job_id, ()))
        with self._link.guard():
            pipe = self._r.pipeline(transaction=False)
            for token in tokens:
                pipe.zadd(key, {token: until})
            pipe.expire(key, math.ceil(self._keep_finished_seconds))
            pipe.execute()

    def watchers(self, job_id: str) -> int:
        """Active waits and subscriptions on the job in every process (each renews a lease)."""
        self.get(job_id)  # JobNotFound for an unknown id
        with self._link.guard():
            return int(self._r.zcount(self._link.job(job_id, "watchers"), time.time(), "+inf"))

    def events(
        self,
        job_id: str,
        *,
        previews: bool = False,
        after: int | None = None,
        timeout: float | None = None,
        heartbeat: float | None = None,
    ) -> Iterator[Event]:
        check_waits(timeout=timeout, heartbeat=heartbeat)
        self.get(job_id)  # JobNotFound here, at the call
        start = "0-0" if after is None else _stream_id(max(-1, after))
        return self._follow(job_id, start=start, previews=previews, timeout=timeout, heartbeat=heartbeat)

    def _follow(
        self, job_id: str, *, start: str, previews: bool, timeout: float | None, heartbeat: float | None
    ) -> Iterator[Event]:
        events_key = self._link.job(job_id, "events")
        deadline = None if timeout is None else time.monotonic() + timeout
        quiet_since = time.monotonic()
        cursor = start
        with self._watching(job_id):
            while not self._closed:
                if previews:
                    with self._link.guard():
                        self._r.set(self._link.job(job_id, "wants-previews"), 1, px=int(WATCH_LEASE * 1000))
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    raise WaitTimeout(f"job {job_id}: no final event within {timeout:g} s")
                waits = [POLL_SECONDS] + [t - now for t in (deadline,) if t is not None]
                if heartbeat is not None:
                    waits.append(quiet_since + heartbeat - now)
                block = max(0.001, min(waits))
                with self._link.guard():
                    read = self._r.xread({events_key: cursor}, count=200, block=int(block * 1000))
                    if not read and not self._r.exists(self._link.job(job_id)):
                        return  # evicted or expired meanwhile: nothing more will come
                self._renew(job_id)
                if not read:
                    if heartbeat is not None and time.monotonic() >= quiet_since + heartbeat:
                        quiet_since = time.monotonic()
                        yield Heartbeat(job_id=job_id)
                    continue
                entries = read[0][1]
                kept = self._previews(job_id) if previews else {}
                for stream_id, fields in entries:
                    cursor = stream_id
                    event = self._event(job_id, stream_id, fields)
                    if event.seq in kept:
                        event = replace(event, preview=kept[event.seq])
                    yield event
                    if event.terminal:
                        return
                quiet_since = time.monotonic()

    def _previews(self, job_id: str) -> dict[int, str]:
        with self._link.guard():
            kept = self._r.hgetall(self._link.job(job_id, "previews"))
        return {int(k): v.decode() for k, v in kept.items()}

    def _event(self, job_id: str, stream_id: bytes, fields: dict[bytes, bytes]) -> Event:
        data = json.loads(fields[b"e"])
        data["seq"] = _seq(stream_id)
        if b"p" in fields:
            data["position"] = int(fields[b"p"])
        event = event_from_dict(data)
        if isinstance(event, Succeeded):
            # Read now, images and all: a stream must be able to finish even if the job goes.
            snapshot = self.get(job_id)
            if snapshot.result is not None:
                images = tuple(replace(im, held=im.png, read=None) for im in snapshot.result.images)
                snapshot = replace(snapshot, result=replace(snapshot.result, images=images))
            event = replace(event, snapshot=snapshot)
        return event
