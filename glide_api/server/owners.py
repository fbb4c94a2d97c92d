"""Who may see a job, and who may change the server for everyone.

With API keys configured, a job belongs to the key that submitted it (`auth.key_id`, kept as the
job's `owner`): another key gets the same 404 as for an unknown id, so job ids cannot be probed, and
`GET /v1/jobs` lists only the caller's jobs. Admin keys are the operators': they see every job, and
only they may make server-wide changes. Without keys, everyone sees everything and the server-wide
routes are open, as in the original Glide-Api.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import g, request

from ..engine import Job
from ..errors import Forbidden, JobNotFound
from .views import service

View = TypeVar("View", bound=Callable[..., Any])


def caller() -> str | None:
    """The owner of the jobs this request submits: its key's id (None without keys)."""
    return g.get("owner")


def may_see(job: Job) -> bool:
    """Whether this request's key may see (and cancel) `job`."""
    if not service().config.all_api_keys:
        return True
    return g.get("admin", False) or (caller() is not None and job.owner == caller())


def owned_job(job_id: str) -> Job:
    """The job, if this request may see it; else the store's own `JobNotFound` (the same 404 as an
    unknown id)."""
    job = service().engine.get(job_id)
    if not may_see(job):
        raise JobNotFound(f"no job {job_id!r} (unknown, or finished and no longer kept)")
    return job


def admin_only(view: View) -> View:
    """A route that changes the server for everyone: with keys configured, only an admin key may
    call it (403 for the others). Put it right under the route decorator, so that it runs before the
    request is validated (a caller without the right learns nothing from the parameters' rules)."""

    @functools.wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if service().config.all_api_keys and not g.get("admin", False):
            raise Forbidden(
                f"authorization: {request.method} {request.path} changes the server for every user; "
                "it needs an admin key (admin_keys)"
            )
        return view(*args, **kwargs)

    return guarded  # type: ignore[return-value]
