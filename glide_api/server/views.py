"""Helpers every blueprint uses: the service of the current app, synchronous waits, event-stream
responses and image URLs."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from flask import Response, current_app, request, stream_with_context, url_for

from ..engine import Job
from ..errors import JobFailed
from .service import Service

logger = logging.getLogger(__name__)

# How often a synchronous wait looks whether its client is still connected.
CLIENT_CHECK_SECONDS = 1.0


def service() -> Service:
    return current_app.extensions["glide_api"]


def submit_and_wait(submit: Callable[[], Job]) -> Job:
    """A synchronous request: take one of the `max_sync_waits` places (503 when none is free, before
    anything is queued), `submit`, and wait up to `sync_timeout` while the client stays connected.

    Returns the job succeeded, or still running after `sync_timeout` (it goes on; see `finished`).
    Raises `JobFailed` if it failed, was cancelled or the server stopped. A client that leaves
    frees its thread within `CLIENT_CHECK_SECONDS`, and its job is cancelled unless someone else
    watches it.
    """
    svc = service()
    release = svc.sync_waits.acquire()
    try:
        job = submit()
        return _wait(svc, job)
    finally:
        release()


def _wait(svc: Service, job: Job) -> Job:
    engine = svc.engine
    client_gone = request.environ.get("waitress.client_disconnected", lambda: False)
    deadline = time.monotonic() + svc.config.sync_timeout
    while True:
        remaining = deadline - time.monotonic()
        done = engine.wait(job.id, timeout=max(0.0, min(CLIENT_CHECK_SECONDS, remaining)))
        if done.done or remaining <= CLIENT_CHECK_SECONDS or engine.stopped:
            break
        if client_gone():
            if engine.watchers(job.id) == 0:
                engine.cancel(job.id)
                logger.info("job %s: its synchronous client left; cancelled", job.id)
            raise JobFailed(f"job {job.id}: the client left", outcome="cancelled", job_id=job.id)
    if not done.done and engine.stopped:  # a durable engine closed: the job runs after a restart
        raise JobFailed(
            f"job {job.id}: the server stopped before it finished; it is kept and runs when the server "
            f"is back: GET /v1/jobs/{job.id}",
            outcome="stopped",
            job_id=job.id,
        )
    if done.status == "succeeded" or not done.done:
        return done
    if svc.stopping:
        raise JobFailed(f"job {job.id}: {done.error}", outcome="stopped", job_id=job.id)
    if done.status == "cancelled":
        raise JobFailed(f"job {job.id} was cancelled", outcome="cancelled", job_id=job.id)
    # Failures the request could have avoided (e.g. out of memory at this batch size) are still the
    # server's to report: 500 with the engine's message, which names the cause.
    raise JobFailed(f"job {job.id} failed: {done.error}", outcome="failed", job_id=job.id)


def finished(job: Job) -> Job:
    """`job` if it is finished; else a 504 naming it: the job goes on and can be fetched by its id."""
    if job.done:
        return job
    raise JobFailed(
        f"job {job.id} is still running after the {service().config.sync_timeout:g} s this server waits; "
        f"it goes on: fetch it with GET /v1/jobs/{job.id}, or use the asynchronous API for long jobs",
        outcome="timed_out",
        job_id=job.id,
    )


def event_stream(start: Callable[[], Iterator[str]]) -> Response:
    """A `text/event-stream` response: take one of the `max_open_streams` places (503 when none is
    free), then `start()` the body (it may submit or subscribe, and raise: the place is given back).
    The place is held until the response is closed, also when the client leaves mid-stream."""
    release = service().streams.acquire()
    try:
        body = start()
    except BaseException:
        release()
        raise
    response = Response(
        stream_with_context(body),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    response.call_on_close(release)
    return response


def image_url(job_id: str, index: int) -> str:
    return url_for("v1.job_image", job_id=job_id, index=index)
