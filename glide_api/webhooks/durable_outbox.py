"""`SqliteOutbox`: the outbox in a data dir, so subscriptions, pending deliveries and attempts
survive a restart.

    webhooks.sqlite3 (-wal, -shm)   subscriptions (in the order made, with the statuses enqueued),
                                    deliveries not yet delivered or given up (bodies as BLOBs, each
                                    with its due time and the attempts made), the attempt log

Every change is one SQLite transaction (journal WAL, synchronous NORMAL, as the job store beside it).
Which deliveries a sender thread holds is kept in memory only: after a restart none is, so the one
being attempted when the process stopped is due again at once (sent at least once, under the same
`webhook-id`). The data dir's lock, taken by the job store, makes this process its only writer.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from .outbox import Attempt, Delivery, Subscription

DATABASE = "webhooks.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS subscriptions (pos INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT UNIQUE NOT NULL, url TEXT NOT NULL, statuses TEXT NOT NULL, events TEXT NOT NULL,
    enqueued TEXT NOT NULL DEFAULT '[]', gone INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS deliveries (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,
    job_id TEXT NOT NULL, status TEXT NOT NULL, event TEXT NOT NULL, url TEXT NOT NULL,
    body BLOB NOT NULL, due REAL NOT NULL, attempts INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS deliveries_by_due ON deliveries (due, seq);
CREATE INDEX IF NOT EXISTS deliveries_by_job ON deliveries (job_id);
CREATE TABLE IF NOT EXISTS attempts (seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL,
    attempt TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS attempts_by_job ON attempts (job_id);
"""

_DELIVERY = "id, job_id, status, event, url, body, due, attempts"  # `Delivery`'s fields, in order


class SqliteOutbox:
    """`Outbox` in `folder`/webhooks.sqlite3, `keep` bounding the subscriptions as in `MemoryOutbox`
    (the oldest with nothing pending go first, with their attempt logs)."""

    shared = False  # the data dir's lock makes this process its only user

    def __init__(self, folder: Path, *, keep: int) -> None:
        self._keep = keep
        self._lock = threading.Lock()
        self._held: dict[str, str] = {}  # delivery id -> job id
        self._closed = False
        Path(folder).mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(Path(folder) / DATABASE, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def subscribe(self, job_id: str, subscription: Subscription) -> None:
        with self._lock, self._db:
            for table in ("subscriptions", "attempts"):
                self._db.execute(f"DELETE FROM {table} WHERE job_id = ?", (job_id,))
            self._db.execute(
                "INSERT INTO subscriptions (job_id, url, statuses, events) VALUES (?, ?, ?, ?)",
                (
                    job_id,
                    subscription.url,
                    json.dumps(sorted(subscription.statuses)),
                    json.dumps(subscription.events),
                ),
            )
            (count,) = self._db.execute("SELECT COUNT(*) FROM subscriptions").fetchone()
            if count <= self._keep:
                return
            old = self._db.execute(
                "SELECT job_id FROM subscriptions s WHERE job_id != ?"
                " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.job_id = s.job_id)"
                " ORDER BY pos LIMIT ?",
                (job_id, count - self._keep),
            ).fetchall()
            for table in ("subscriptions", "attempts"):
                self._db.executemany(f"DELETE FROM {table} WHERE job_id = ?", old)

    def wants(self, job_id: str, status: str) -> Subscription | None:
        with self._lock:
            row = self._db.execute(
                "SELECT url, statuses, events, enqueued, gone FROM subscriptions WHERE job_id = ?",
                (job_id,),
            ).fetchone()
        if row is None or row[4] or status in json.loads(row[3]):
            return None
        url, statuses, events = row[0], frozenset(json.loads(row[1])), tuple(json.loads(row[2]))
        return Subscription(url, statuses, events) if status in statuses else None

    def enqueue(self, delivery: Delivery) -> bool:
        with self._lock, self._db:
            row = self._db.execute(
                "SELECT enqueued, gone FROM subscriptions WHERE job_id = ?", (delivery.job_id,)
            ).fetchone()
            if row is None or row[1] or delivery.status in (enqueued := json.loads(row[0])):
                return False
            self._db.execute(
                "UPDATE subscriptions SET enqueued = ? WHERE job_id = ?",
                (json.dumps([*enqueued, delivery.status]), delivery.job_id),
            )
            self._db.execute(
                f"INSERT INTO deliveries ({_DELIVERY}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    delivery.id,
                    delivery.job_id,
                    delivery.status,
                    delivery.event,
                    delivery.url,
                    delivery.body,
                    delivery.due,
                    delivery.attempts,
                ),
            )
            return True

    def take(self, now: float) -> Delivery | None:
        with self._lock:
            free, busy = self._free()
            row = self._db.execute(
                f"SELECT {_DELIVERY} FROM deliveries WHERE due <= ? AND {free} ORDER BY due, seq LIMIT 1",
                (now, *busy),
            ).fetchone()
            if row is None:
                return None
            delivery = Delivery(*row)
            self._held[delivery.id] = delivery.job_id
            return delivery

    def next_due(self) -> float | None:
        with self._lock:
            free, busy = self._free()
            return self._db.execute(f"SELECT MIN(due) FROM deliveries WHERE {free}", busy).fetchone()[0]

    def _free(self) -> tuple[str, list[str]]:
        """The condition (and its parameters) for deliveries of jobs with none held."""
        busy = sorted(set(self._held.values()))
        return f"job_id NOT IN ({', '.join('?' * len(busy))})", busy

    def record(self, delivery: Delivery, attempt: Attempt) -> None:
        with self._lock:
            self._held.pop(delivery.id, None)
            if self._closed:  # an attempt that outlived the sender's close: offered again at the next start
                return
            with self._db:
                gone = attempt.outcome == "gone"
                known = self._db.execute(
                    "UPDATE subscriptions SET gone = gone OR ? WHERE job_id = ?", (gone, delivery.job_id)
                ).rowcount
                if known:
                    self._db.execute(
                        "INSERT INTO attempts (job_id, attempt) VALUES (?, ?)",
                        (delivery.job_id, json.dumps(attempt.to_dict())),
                    )
                if attempt.outcome == "retrying" and attempt.next_attempt_at is not None:
                    self._db.execute(
                        "UPDATE deliveries SET due = ?, attempts = ? WHERE id = ?",
                        (attempt.next_attempt_at, attempt.attempt, delivery.id),
                    )
                else:
                    self._db.execute("DELETE FROM deliveries WHERE id = ?", (delivery.id,))
                if gone:  # the job's later events, enqueued already, are not sent either
                    self._db.execute("DELETE FROM deliveries WHERE job_id = ?", (delivery.job_id,))

    def pending(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0]

    def describe(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT url, events FROM subscriptions WHERE job_id = ?", (job_id,)
            ).fetchone()
            if row is None:
                return None
            attempts = self._db.execute(
                "SELECT attempt FROM attempts WHERE job_id = ? ORDER BY seq", (job_id,)
            ).fetchall()
        return {
            "url": row[0],
            "events": json.loads(row[1]),
            "deliveries": [json.loads(text) for (text,) in attempts],
        }

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()
