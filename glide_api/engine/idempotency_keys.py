"""Idempotency-key records: which job each (scope, key) submitted, and the request it stood for.

`IdempotencyKeys` is the store behind the `Idempotency-Key` header (`server/idempotency.py`); a
scope is an owner (an API key's id), so two users' keys never meet. Three atomic steps on one
(scope, key):

    claim(scope=, key=, fingerprint=) -> Claim   "new" (go ahead: the key is held for you),
                                                 "replay" (`job_id`), "pending" (another request
                                                 holds it and has not submitted yet) or "mismatch"
                                                 (held or bound for another fingerprint)
    bind(claim, job_id)                          the held key names `job_id` for `ttl` seconds
    release(claim)                               the submit failed: the key is free again

A held key expires after `claim_seconds` unless bound, so a process that dies between claim and bind
blocks nobody for long; `bind` and `release` act only on the claim's own `token`, so a claim that
outlived its hold cannot overwrite the one that took the key over. Here: in memory
(`MemoryIdempotencyKeys`, bounded) and in the data dir (`SqliteIdempotencyKeys`). A Redis store maps
one to one: claim is `SET k {fingerprint, token} NX PX claim_ms`, else `GET k` decided as `_found`
(retried if it expired in between); bind and release are compare-the-token scripts
(`SET k {fingerprint, token, job_id} PX ttl_ms`; `DEL k` while it has no job).
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from ..errors import EngineClosed

DATABASE = "idempotency.sqlite3"
# How long a claimed key is held for its submit (which takes milliseconds) before others may take it.
CLAIM_SECONDS = 10.0

State = Literal["new", "replay", "pending", "mismatch"]


@dataclass(frozen=True)
class Claim:
    """What `IdempotencyKeys.claim` found for (scope, key)."""

    state: State
    scope: str
    key: str
    token: str | None = None  # "new": the hold's own, for `bind` and `release`
    job_id: str | None = None  # "replay": the job the key submitted


class IdempotencyKeys(Protocol):
    """Each (scope, key)'s record: its request's fingerprint and, once submitted, its job id."""

    def claim(self, *, scope: str, key: str, fingerprint: str) -> Claim:
        """Atomically: hold the key for this request if no unexpired record has it ("new"), else
        say what the record holds ("replay", "pending", or "mismatch" for another fingerprint)."""
        ...

    def bind(self, claim: Claim, job_id: str) -> None:
        """The held key names `job_id` from now for `ttl` seconds (no-op if the hold was lost)."""
        ...

    def release(self, claim: Claim) -> None:
        """Forget the held key, so a retry can submit (no-op if the hold was lost)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class _Record:
    fingerprint: str
    token: str
    job_id: str | None  # None while its claim's submit runs
    expires_at: float  # wall-clock seconds


def _found(record: _Record | None, scope: str, key: str, fingerprint: str, now: float) -> Claim | None:
    """What a record says to a claim; None when the key is free (no record, or an expired one)."""
    if record is None or record.expires_at <= now:
        return None
    if record.fingerprint != fingerprint:
        return Claim("mismatch", scope, key)
    if record.job_id is None:
        return Claim("pending", scope, key)
    return Claim("replay", scope, key, job_id=record.job_id)


class MemoryIdempotencyKeys:
    """Records in this process: at most `max_keys` (the oldest claims forgotten first)."""

    def __init__(
        self,
        *,
        ttl: float,
        max_keys: int,
        claim_seconds: float = CLAIM_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ttl, self._max, self._hold, self._clock = ttl, max_keys, min(claim_seconds, ttl), clock
        self._records: OrderedDict[tuple[str, str], _Record] = OrderedDict()  # oldest claim first
        self._lock = threading.Lock()

    def claim(self, *, scope: str, key: str, fingerprint: str) -> Claim:
        now = self._clock()
        with self._lock:
            found = _found(self._records.get((scope, key)), scope, key, fingerprint, now)
            if found is not None:
                return found
            token = secrets.token_hex(16)
            self._records.pop((scope, key), None)
            self._records[scope, key] = _Record(fingerprint, token, None, now + self._hold)
            while len(self._records) > self._max or next(iter(self._records.values())).expires_at <= now:
                self._records.popitem(last=False)
            return Claim("new", scope, key, token=token)

    def bind(self, claim: Claim, job_id: str) -> None:
        with self._lock:
            record = self._records.get((claim.scope, claim.key))
            if record is not None and record.token == claim.token:
                self._records[claim.scope, claim.key] = _Record(
                    record.fingerprint, record.token, job_id, self._clock() + self._ttl
                )

    def release(self, claim: Claim) -> None:
        with self._lock:
            record = self._records.get((claim.scope, claim.key))
            if record is not None and record.token == claim.token and record.job_id is None:
                del self._records[claim.scope, claim.key]

    def close(self) -> None:
        """Nothing to let go of: the records end with the process."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (scope TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL,
    token TEXT NOT NULL, job_id TEXT, expires_at REAL NOT NULL, PRIMARY KEY (scope, key));
CREATE INDEX IF NOT EXISTS keys_expiry ON keys (expires_at);
"""


class SqliteIdempotencyKeys:
    """Records in `DATA_DIR/idempotency.sqlite3` (WAL), so a key outlives a restart. At most
    `max_keys` (the oldest claims forgotten first); expired records are deleted at each new claim."""

    def __init__(
        self,
        path: Path,
        *,
        ttl: float,
        max_keys: int,
        claim_seconds: float = CLAIM_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ttl, self._max, self._hold, self._clock = ttl, max_keys, min(claim_seconds, ttl), clock
        # Transactions are explicit (BEGIN IMMEDIATE): a claim's read and write are one step.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._closed = False

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise EngineClosed("the service is shutting down")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _record(self, db: sqlite3.Connection, scope: str, key: str) -> _Record | None:
        row = db.execute(
            "SELECT fingerprint, token, job_id, expires_at FROM keys WHERE scope = ? AND key = ?",
            (scope, key),
        ).fetchone()
        return _Record(*row) if row else None

    def claim(self, *, scope: str, key: str, fingerprint: str) -> Claim:
        now = self._clock()
        with self._transaction() as db:
            found = _found(self._record(db, scope, key), scope, key, fingerprint, now)
            if found is not None:
                return found
            token = secrets.token_hex(16)
            db.execute("DELETE FROM keys WHERE expires_at <= ?", (now,))
            db.execute(
                "INSERT OR REPLACE INTO keys VALUES (?, ?, ?, ?, NULL, ?)",
                (scope, key, fingerprint, token, now + self._hold),
            )
            # A replaced row gets a new rowid: rowid order is claim order.
            db.execute(
                "DELETE FROM keys WHERE rowid IN"
                " (SELECT rowid FROM keys ORDER BY rowid DESC LIMIT -1 OFFSET ?)",
                (self._max,),
            )
            return Claim("new", scope, key, token=token)

    def bind(self, claim: Claim, job_id: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE keys SET job_id = ?, expires_at = ? WHERE scope = ? AND key = ? AND token = ?",
                (job_id, self._clock() + self._ttl, claim.scope, claim.key, claim.token),
            )

    def release(self, claim: Claim) -> None:
        with self._transaction() as db:
            db.execute(
                "DELETE FROM keys WHERE scope = ? AND key = ? AND token = ? AND job_id IS NULL",
                (claim.scope, claim.key, claim.token),
            )

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._db.close()


def open_idempotency_keys(folder: Path | None, *, ttl: float, max_keys: int) -> IdempotencyKeys:
    """The records of the data dir `folder` (which must exist), or in memory for None."""
    if folder is None:
        return MemoryIdempotencyKeys(ttl=ttl, max_keys=max_keys)
    return SqliteIdempotencyKeys(Path(folder) / DATABASE, ttl=ttl, max_keys=max_keys)
