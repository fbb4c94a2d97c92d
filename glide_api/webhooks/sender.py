"""The background sender: a few threads take due deliveries from the outbox, sign and POST each,
and record the attempt, scheduling the next one with exponential backoff.

The schedule: attempt 1 at once; attempt n + 1 comes `backoff * 4 ** (n - 1)` seconds after attempt
n failed (5 s, 20 s, 80 s, 5 min 20 s, ... by default), at most `attempts` attempts in all. A 2xx
answer delivers; HTTP 410 Gone ends the job's subscription; a target that resolves to a forbidden
address is given up at once; any other answer, a timeout or a connection error is retried (a
receiver's Retry-After, with a 429 or 503, can make the wait longer, up to an hour).
Nothing here runs on a request thread or on the engine's worker.

The threads sleep until the next delivery is due or `notify()` says something changed. An outbox
`shared` with other processes (a fleet's) changes without a word to this process, so there they
look again at least every `SHARED_POLL_SECONDS`: a delivery another process enqueued, or one whose
holder died (once its hold ends), is taken within about a second. An outbox that does not answer
(`StoreUnavailable`) is tried again after `UNAVAILABLE_RETRY_SECONDS`; an attempt it could not
record is offered again when its hold ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version

from ..errors import StoreUnavailable, WebhookRefused
from .outbox import Attempt, Delivery, Outbox, Outcome
from .signing import WebhookSecret
from .targets import Answer, Target, post

logger = logging.getLogger(__name__)

MAX_RETRY_AFTER = 3600.0  # the longest wait a receiver's Retry-After can ask for
BACKOFF_FACTOR = 4
SHARED_POLL_SECONDS = 1.0
UNAVAILABLE_RETRY_SECONDS = 2.0


def _user_agent() -> str:
    try:
        return f"glide-api/{version('glide-api')} webhooks"
    except PackageNotFoundError:  # run from a source tree
        return "glide-api webhooks"


class Sender:
    """Sends the outbox's deliveries on `workers` daemon threads until `close()`."""

    def __init__(
        self,
        outbox: Outbox,
        secret: WebhookSecret,
        *,
        allow_hosts: Sequence[str],
        timeout: float,
        attempts: int,
        backoff: float,
        workers: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._outbox = outbox
        self._secret = secret
        self._allow_hosts = tuple(allow_hosts)
        self._timeout = timeout
        self._attempts = attempts
        self._backoff = backoff
        self._clock = clock
        self._user_agent = _user_agent()
        self._wake = threading.Condition()
        self._stopped = False
        self._threads = [
            threading.Thread(target=self._run, name=f"glide-webhooks-{i}", daemon=True)
            for i in range(workers)
        ]

    def delay(self, attempt: int) -> float:
        """Seconds from the failed attempt `attempt` (1 = the first) to the next one."""
        return self._backoff * BACKOFF_FACTOR ** (attempt - 1)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def notify(self) -> None:
        """Something was enqueued or recorded: the threads look again for what is due."""
        with self._wake:
            self._wake.notify_all()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the threads (an attempt under way finishes within its own timeout)."""
        with self._wake:
            self._stopped = True
            self._wake.notify_all()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._wake:
                while True:
                    if self._stopped:
                        return
                    try:
                        delivery = self._outbox.take(self._clock())
                        if delivery is not None:
                            break
                        wait = self._wait(self._outbox.next_due())
                    except StoreUnavailable as e:
                        logger.warning("webhooks: %s; trying again in %g s", e, UNAVAILABLE_RETRY_SECONDS)
                        wait = UNAVAILABLE_RETRY_SECONDS
                    self._wake.wait(wait)
            try:
                self._attempt(delivery)
            except Exception:  # a bug here must not stop the sender; the delivery is given up
                logger.exception("webhook %s: unexpected error", delivery.id)
                self._record(
                    delivery,
                    Attempt(
                        delivery.id,
                        delivery.event,
                        delivery.attempts + 1,
                        self._clock(),
                        None,
                        "internal error (details in the server log)",
                        "failed",
                    ),
                )
            self.notify()  # the job's next delivery, or this one's retry, may be what a thread waits for

    def _attempt(self, delivery: Delivery) -> None:
        number = delivery.attempts + 1
        at = self._clock()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": self._user_agent,
            **self._secret.headers(delivery.id, int(at), delivery.body),
        }
        try:
            answer = post(
                Target.parse(delivery.url),
                delivery.body,
                headers,
                timeout=self._timeout,
                allow_hosts=self._allow_hosts,
            )
        except WebhookRefused as e:
            answer, refused = Answer(None, str(e)), True
        else:
            refused = False
        outcome: Outcome
        next_at = None
        if answer.ok:
            outcome = "delivered"
        elif answer.status == 410:
            outcome = "gone"
        elif refused or number >= self._attempts:
            outcome = "failed"
        else:
            # A receiver that says when to come back (429, 503 with Retry-After) is believed, up
            # to MAX_RETRY_AFTER, but never sooner than the schedule.
            wait = max(self.delay(number), min(answer.retry_after or 0.0, MAX_RETRY_AFTER))
            outcome, next_at = "retrying", self._clock() + wait
        self._record(
            delivery,
            Attempt(delivery.id, delivery.event, number, at, answer.status, answer.error, outcome, next_at),
        )
        log = logger.info if outcome in ("delivered", "retrying") else logger.warning
        log(
            "webhook %s (job %s, %s) attempt %d: %s%s",
            delivery.id,
            delivery.job_id,
            delivery.event,
            number,
            outcome,
            f" ({answer.error})" if answer.error else "",
        )

    def _wait(self, due: float | None) -> float | None:
        """Seconds to sleep before looking again (None: until notified)."""
        wait = None if due is None else max(0.0, due - self._clock())
        if self._outbox.shared:
            wait = SHARED_POLL_SECONDS if wait is None else min(wait, SHARED_POLL_SECONDS)
        return wait

    def _record(self, delivery: Delivery, attempt: Attempt) -> None:
        try:
            self._outbox.record(delivery, attempt)
        except StoreUnavailable as e:  # still held in the outbox: offered again when its hold ends
            logger.warning("webhook %s: attempt %d not recorded: %s", delivery.id, attempt.attempt, e)
