"""Helpers every blueprint uses: the service of the current app, waiting for a job, image URLs."""

from __future__ import annotations

from flask import current_app, url_for

from ..engine import Job
from ..errors import JobFailed
from .service import Service


def service() -> Service:
    return current_app.extensions["glide_api"]


def wait_for(job: Job) -> Job:
    """Block until `job` finishes (up to `sync_timeout`); the finished job, or `JobFailed`."""
    engine = service().engine
    done = engine.wait(job.id, timeout=service().config.sync_timeout)
    if done.status == "succeeded":
        return done
    if not done.done:
        engine.cancel(job.id)
        raise JobFailed(
            f"the job took longer than this server waits ({service().config.sync_timeout:g} s); "
            "use the asynchronous API for long jobs",
            outcome="timed_out",
            job_id=job.id,
        )
    if done.status == "cancelled":
        raise JobFailed(f"job {job.id} was cancelled", outcome="cancelled", job_id=job.id)
    # Failures the request could have avoided (e.g. out of memory at this batch size) are still the
    # server's to report: 500 with the engine's message, which names the cause.
    raise JobFailed(f"job {job.id} failed: {done.error}", outcome="failed", job_id=job.id)


def image_url(job_id: str, index: int) -> str:
    return url_for("v1.job_image", job_id=job_id, index=index)
