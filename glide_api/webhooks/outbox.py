"""The outbox: each job's webhook subscription, the deliveries still to make, and the attempts made.

`Outbox` is what the sender and the server need; `MemoryOutbox` keeps it in this process (lost at a
restart), `SqliteOutbox` (`durable_outbox.py`) in a data dir, where it survives one, `RedisOutbox`
(`redis_outbox.py`) on a fleet's Redis, shared by its processes: a delivery is sent at least once,
and the receiver tells repeats apart by `webhook-id`, which stays the same for every attempt of one
delivery.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

Outcome = Literal["delivered", "retrying", "failed", "gone"]


@dataclass(frozen=True)
class Subscription:
    """Where a job's events go and which job statuses make one."""

    url: str
    statuses: frozenset[str]
    events: tuple[str, ...]  # as the caller named them, e.g. ("completed",)


@dataclass(frozen=True)
class Delivery:
    """One event to deliver: its body is fixed when it is made; every attempt is signed anew."""

    id: str  # the `webhook-id`, the same for every attempt
    job_id: str
    status: str  # the job status it reports
    event: str  # the payload's `type`, e.g. "job.succeeded"
    url: str
    body: bytes = field(repr=False)
    due: float  # wall-clock seconds of the next attempt
    attempts: int = 0  # attempts made so far


@dataclass(frozen=True)
class Attempt:
    """One attempt's record, as the job shows it."""

    delivery_id: str
    event: str
    attempt: int  # 1 for the first
    at: float
    status: int | None  # the receiver's HTTP status; None when no answer came
    error: str | None
    outcome: Outcome
    next_attempt_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.delivery_id,
            "event": self.event,
            "attempt": self.attempt,
            "at": self.at,
            "status": self.status,
            "error": self.error,
            "outcome": self.outcome,
            "next_attempt_at": self.next_attempt_at,
        }


class Outbox(Protocol):
    """Atomic and thread-safe, every method."""

    # Whether other processes enqueue and take too: then a sender cannot be told of every change
    # and looks again at least every `sender.SHARED_POLL_SECONDS`.
    shared: bool

    def subscribe(self, job_id: str, subscription: Subscription) -> None:
        """Record that `job_id`'s events go to `subscription` (before any of them is enqueued)."""

    def wants(self, job_id: str, status: str) -> Subscription | None:
        """The subscription, if `status` is one it wants and has not been enqueued yet."""

    def enqueue(self, delivery: Delivery) -> bool:
        """Add a delivery unless its job's status was enqueued already (then False: no duplicate)."""

    def take(self, now: float) -> Delivery | None:
        """The earliest delivery due at `now` of a job with none held, held for the caller until it
        `record`s the attempt (so a job's deliveries go one at a time, in the order they were made,
        unless one is waiting for a retry)."""

    def next_due(self) -> float | None:
        """When the earliest delivery `take` could give is due (None: none until one is recorded or
        enqueued)."""

    def record(self, delivery: Delivery, attempt: Attempt) -> None:
        """Log a held delivery's attempt; "retrying" puts it back, due at `attempt.next_attempt_at`;
        "gone" (HTTP 410) also ends the subscription: no later event of the job is sent, even one
        enqueued already."""

    def pending(self) -> int:
        """Deliveries not yet delivered or given up (held ones included)."""

    def describe(self, job_id: str) -> dict[str, Any] | None:
        """{url, events, deliveries: [attempt, ...]} for a job with a subscription, else None."""

    def close(self) -> None:
        """Release what it holds (idempotent). A durable outbox ignores an attempt recorded after
        this (by a sender thread that outlived its close): that delivery is due at the next start."""


@dataclass(eq=False)
class _Record:
    subscription: Subscription
    enqueued: set[str] = field(default_factory=set)
    attempts: list[Attempt] = field(default_factory=list)
    pending: int = 0
    gone: bool = False


class MemoryOutbox:
    """`Outbox` in this process's memory. It keeps the `keep` most recent subscriptions, dropping
    the oldest one with nothing pending first (so size it as the jobs the store keeps); a job's
    attempt log is bounded by the statuses it reports times the attempts each may take."""

    shared = False

    def __init__(self, *, keep: int) -> None:
        self._keep = keep
        self._lock = threading.Lock()
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._due: dict[str, Delivery] = {}  # by delivery id; held ones are in `_held`
        self._held: dict[str, Delivery] = {}

    def subscribe(self, job_id: str, subscription: Subscription) -> None:
        with self._lock:
            self._records[job_id] = _Record(subscription)
            for old, record in list(self._records.items()):
                if len(self._records) <= self._keep:
                    break
                if not record.pending and old != job_id:
                    del self._records[old]

    def wants(self, job_id: str, status: str) -> Subscription | None:
        with self._lock:
            record = self._records.get(job_id)
            if record is None or record.gone or status in record.enqueued:
                return None
            return record.subscription if status in record.subscription.statuses else None

    def enqueue(self, delivery: Delivery) -> bool:
        with self._lock:
            record = self._records.get(delivery.job_id)
            if record is None or record.gone or delivery.status in record.enqueued:
                return False
            record.enqueued.add(delivery.status)
            record.pending += 1
            self._due[delivery.id] = delivery
            return True

    def take(self, now: float) -> Delivery | None:
        with self._lock:
            ready = [d for d in self._free() if d.due <= now]
            if not ready:
                return None
            delivery = min(ready, key=lambda d: d.due)  # the first made among equals
            self._held[delivery.id] = self._due.pop(delivery.id)
            return delivery

    def next_due(self) -> float | None:
        with self._lock:
            return min((d.due for d in self._free()), default=None)

    def _free(self) -> list[Delivery]:
        """The deliveries of jobs with none held (call with the lock held), in the order made."""
        busy = {d.job_id for d in self._held.values()}
        return [d for d in self._due.values() if d.job_id not in busy]

    def record(self, delivery: Delivery, attempt: Attempt) -> None:
        with self._lock:
            self._held.pop(delivery.id, None)
            record = self._records.get(delivery.job_id)
            if record is not None:
                record.attempts.append(attempt)
                record.gone = record.gone or attempt.outcome == "gone"
            if attempt.outcome == "gone":  # the job's later events, enqueued already, are not sent either
                later = [i for i, d in self._due.items() if d.job_id == delivery.job_id]
                for i in later:
                    del self._due[i]
                if record is not None:
                    record.pending -= len(later)
            if attempt.outcome == "retrying" and attempt.next_attempt_at is not None:
                self._due[delivery.id] = replace(
                    delivery, attempts=attempt.attempt, due=attempt.next_attempt_at
                )
            elif record is not None:
                record.pending -= 1

    def pending(self) -> int:
        with self._lock:
            return len(self._due) + len(self._held)

    def describe(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            record = self._records.get(job_id)
            if record is None:
                return None
            return {
                "url": record.subscription.url,
                "events": list(record.subscription.events),
                "deliveries": [a.to_dict() for a in record.attempts],
            }

    def close(self) -> None:
        """Nothing to release: the records end with the process."""
