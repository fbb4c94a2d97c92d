"""Jobs' webhooks: the `webhook` and `webhook_events` fields at submit, each status a job reaches
turned into a signed delivery (`glide_api.webhooks`), and the record the job JSON shows.

The events a job may ask for: its statuses (`queued`, `running`, `succeeded`, `failed`,
`cancelled`), `completed` (whichever final status it reaches: one delivery) and `all` (every
status). Each status is delivered once per job, whatever the order its changes are told in.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from ..config import ServiceConfig
from ..engine import Job
from ..engine.jobs import STATUSES, TERMINAL
from ..errors import InvalidParameter, JobNotFound, ServerBusy
from ..webhooks import (
    LEASE_MARGIN,
    Delivery,
    MemoryOutbox,
    Outbox,
    RedisOutbox,
    Sender,
    SqliteOutbox,
    Subscription,
    Target,
    WebhookSecret,
    check_literal,
)
from .job_json import job_json

COMPLETED, ALL = "completed", "all"
EVENTS: tuple[str, ...] = (COMPLETED, ALL, *STATUSES)
DEFAULT_EVENTS: tuple[str, ...] = (COMPLETED,)
FULL_RETRY_SECONDS = 30  # a full outbox drains as receivers answer; try again after about this long


def _statuses(name: str) -> frozenset[str]:
    return {COMPLETED: TERMINAL, ALL: frozenset(STATUSES)}.get(name, frozenset({name}))


def _passed(job: Job) -> list[str]:
    """The statuses `job` has been through, in order (one snapshot can stand for several changes)."""
    return [
        "queued",
        *(["running"] if job.started_at is not None else []),
        *([job.status] if job.done else []),
    ]


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


class JobWebhooks:
    """The service's webhooks: an outbox and, with a `webhook_secret`, the sender threads, which
    send what is due at once, deliveries a previous run left included. The outbox is, in a fleet
    (`config.queue`), on its Redis, shared by every replica and worker; else in the data dir
    (`config.store_dir`) when there is one (open the job store first: its lock makes the dir this
    process's); else in memory."""

    def __init__(self, config: ServiceConfig, *, outbox: Outbox | None = None) -> None:
        self._config = config
        self._secret = WebhookSecret.parse(config.webhook_secret) if config.webhook_secret else None
        # As many subscriptions as the store can hold jobs: waiting, running and kept finished ones.
        keep = config.keep_finished + config.max_queue + config.max_batch_images
        if outbox is None:
            outbox = _outbox(config, keep=keep)
        self._outbox = outbox
        self._base = (config.public_url or "").rstrip("/")
        self._sender = (
            None
            if self._secret is None
            else Sender(
                self._outbox,
                self._secret,
                allow_hosts=config.webhook_allow_hosts,
                timeout=config.webhook_timeout,
                attempts=config.webhook_attempts,
                backoff=config.webhook_backoff,
                workers=config.webhook_workers,
            )
        )
        if self._sender is not None:
            self._sender.start()

    def close(self) -> None:
        """Stop sending; deliveries not made yet stay in the outbox (for the next start, in a data dir)."""
        if self._sender is not None:
            self._sender.close(timeout=self._config.webhook_timeout)
        self._outbox.close()

    # ---- at submit ----------------------------------------------------------------------------

    def subscription(self, url: str | None, events: Sequence[str] | str | None) -> Subscription | None:
        """The request's webhook, checked (400 naming the field), or None without one; a 503 while
        `webhook_max_pending` deliveries wait."""
        if url is None:
            if events is not None:
                raise InvalidParameter("webhook_events: only with a webhook")
            return None
        if self._sender is None:
            raise InvalidParameter(
                "webhook: this server sends no webhooks (it has no webhook_secret to sign them with)"
            )
        target = Target.parse(url)
        check_literal(target, self._config.webhook_allow_hosts)
        names = DEFAULT_EVENTS if events is None else _event_names(events)
        if self._outbox.pending() >= self._config.webhook_max_pending:
            raise ServerBusy(
                f"webhook: {self._config.webhook_max_pending} webhook deliveries are waiting to be sent "
                "(webhook_max_pending); try again later",
                retry_after=FULL_RETRY_SECONDS,
            )
        statuses = frozenset().union(*(_statuses(name) for name in names))
        return Subscription(url=url, statuses=statuses, events=names)

    def watch(self, job: Job, subscription: Subscription, current: Callable[[str], Job]) -> None:
        """Send `job`'s events to `subscription` from now on, and those it already passed (it may have
        run, even finished, before this call): `current(job_id)` says where it is now."""
        self._outbox.subscribe(job.id, subscription)
        with contextlib.suppress(JobNotFound):  # evicted already: the snapshot at hand says enough
            job = current(job.id)
        self.changed(job)

    # ---- as jobs change -----------------------------------------------------------------------

    def changed(self, job: Job) -> None:
        """The engine's `on_change`: enqueue a delivery per wanted status not yet enqueued. Cheap for
        a job without a webhook; never sends anything itself."""
        for status in _passed(job):
            subscription = self._outbox.wants(job.id, status)
            if subscription is None:
                continue
            delivery = Delivery(
                id=f"msg_{uuid.uuid4().hex}",
                job_id=job.id,
                status=status,
                event=f"job.{status}",
                url=subscription.url,
                body=self._body(job, status),
                due=0.0,  # at once
            )
            if self._outbox.enqueue(delivery) and self._sender is not None:
                self._sender.notify()

    def describe(self, job_id: str) -> dict[str, Any] | None:
        """The job JSON's `webhook`: url, events and every attempt so far; None without a webhook."""
        return self._outbox.describe(job_id)

    def _body(self, job: Job, status: str) -> bytes:
        at = {"queued": job.created_at, "running": job.started_at}.get(status, job.finished_at)
        payload = {
            "type": f"job.{status}",
            "timestamp": _iso(at if at is not None else job.created_at),
            "data": job_json(job, self._image_url),
        }
        return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()

    def _image_url(self, job_id: str, index: int) -> str:
        return f"{self._base}/v1/jobs/{job_id}/images/{index}.png"


def _outbox(config: ServiceConfig, *, keep: int) -> Outbox:
    if config.queue is not None:  # a fleet: no data dir, one outbox for all its processes
        return RedisOutbox(
            config.queue,
            keep=keep,
            lease=config.webhook_timeout + LEASE_MARGIN,
            retention=config.keep_finished_seconds,
        )
    folder = config.store_dir
    return MemoryOutbox(keep=keep) if folder is None else SqliteOutbox(folder, keep=keep)


def _event_names(events: Sequence[str] | str) -> tuple[str, ...]:
    """The names a request gave (a list, or comma-separated in a form), each checked."""
    names = [n.strip() for n in events.split(",")] if isinstance(events, str) else list(events)
    names = [n for n in names if n]
    if not names:
        raise InvalidParameter(f"webhook_events: name at least one of {', '.join(EVENTS)}")
    unknown = [n for n in names if n not in EVENTS]
    if unknown:
        raise InvalidParameter(f"webhook_events: unknown {', '.join(unknown)}; use {', '.join(EVENTS)}")
    return tuple(dict.fromkeys(names))
