"""The client's exceptions, and how an HTTP error answer becomes one.

Every class derives from `GlideAPIError`, which derives from the package's `glide_api.errors.GlideError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import requests

from ..errors import GlideError

if TYPE_CHECKING:
    from .types import Job


class GlideAPIError(GlideError):
    """Base of every error this client raises.

    `status` is the HTTP status (None when no answer came). `message`, `param` (the request field at
    fault), `code` and `error_type` come from the server's error body when it sent one.
    `retry_after`: the seconds a 429 or 503 answer asked the client to wait (Retry-After), else None.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        param: str | None = None,
        code: str | None = None,
        error_type: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code
        self.error_type = error_type
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.message}" if self.status else self.message


class BadRequest(GlideAPIError):
    """400 (and 405, 409, 413, 415, 422): the request is wrong; `param` names the field when known."""


class AuthenticationError(GlideAPIError):
    """401: the API key is missing or not valid (`GlideClient(api_key=...)`); 403: the key may not do
    this (server-wide changes need an admin key)."""


class NotFound(GlideAPIError):
    """404: no such job (never existed, or finished long enough ago to be forgotten) or route."""


class RateLimited(GlideAPIError):
    """429: too many requests for this key (`code` "rate_limit_exceeded") or the server's queue is
    full ("queue_full"). Nothing was queued. `retry_after`: seconds to wait, from the header."""


class NotReady(GlideAPIError):
    """503: the models are loading or missing, or the server is shutting down. Nothing was queued;
    `retry_after` says when to ask again."""


class ServerError(GlideAPIError):
    """Any other 5xx: the server failed; its log has the details."""


class JobFailedError(GlideAPIError):
    """A job that was waited for ended `failed` or `cancelled`. From `wait()`: `status` None. From a
    synchronous call: `status` 500 (failed), 409 (cancelled) or 503 (the server stopped). `job` is
    the job when it could be fetched, `job_id` its id when known (from a synchronous call: the
    error body's `job_id`)."""

    def __init__(self, message: str, *, job: Job | None = None, job_id: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.job = job
        self.job_id = job.id if job is not None else job_id


class TransportError(GlideAPIError):
    """No answer: the server could not be reached, or the connection broke."""


class Timeout(TransportError, TimeoutError):
    """A request or a wait took longer than its timeout. A job on the server keeps running."""


_ERRORS: dict[int, type[GlideAPIError]] = {
    400: BadRequest,
    405: BadRequest,
    409: BadRequest,
    413: BadRequest,
    415: BadRequest,
    422: BadRequest,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFound,
    429: RateLimited,
    503: NotReady,
}


def error_from_response(response: requests.Response) -> GlideAPIError:
    """The exception for an error answer, from its `{"error": {"message", "type", "param", "code"}}`
    body (plus `job_id` for a synchronous job's failure), or from its text when it has no such body."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    job_id = None
    if isinstance(error, dict):
        message = str(error.get("message") or f"HTTP {status}")
        fields: dict[str, Any] = {
            "param": error.get("param"),
            "code": error.get("code"),
            "error_type": error.get("type"),
        }
        job_id = error.get("job_id")
    else:
        reason = body.get("reason") if isinstance(body, dict) else None
        message = str(reason or response.text.strip()[:300] or response.reason or f"HTTP {status}")
        fields = {"param": None, "code": None, "error_type": None}
    fields["retry_after"] = _retry_after(response.headers.get("Retry-After"))
    if fields["code"] == "job_failed":
        return JobFailedError(message, job_id=str(job_id) if job_id else None, status=status, **fields)
    cls = _ERRORS.get(status, ServerError if status >= 500 else GlideAPIError)
    return cls(message, status=status, **fields)


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (delta-seconds form; an HTTP date is read as "soon": 1 s)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return 1.0
