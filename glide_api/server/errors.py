"""Every error the HTTP app sends, in one place and one shape.

Body: `{"error": {"message", "type", "param", "code"}}` (OpenAI's shape, used by every route, so a
client parses errors one way), plus `job_id` when the error is about one job. `ERRORS` maps each
exception type to its status, code, parameter and headers; one handler applies it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from apiflask import APIFlask, HTTPError
from flask import Response, jsonify
from werkzeug.exceptions import HTTPException

from ..errors import (
    EngineClosed,
    Forbidden,
    IdempotencyKeyReused,
    InvalidParameter,
    JobFailed,
    JobNotFound,
    ModelNotReady,
    NoResult,
    QueueFull,
    ServerBusy,
    StoreUnavailable,
    TooLarge,
)

logger = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    414: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    431: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
}
_CODES = {
    401: "invalid_api_key",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "not_finished",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    431: "headers_too_large",
    503: "not_ready",
}
# A synchronous request's job that did not succeed: its outcome decides the status.
JOB_OUTCOME_STATUS = {"timed_out": 504, "cancelled": 409, "failed": 500, "stopped": 503}
SHUTDOWN_RETRY_SECONDS = 30  # a restarted server is usually back (and loaded) within this


def error_body(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    job_id: str | None = None,
) -> dict[str, Any]:
    """The one error shape, as plain data."""
    body = {
        "error": {
            "message": message,
            "type": _TYPES.get(status, "server_error"),
            "param": param,
            "code": code or _CODES.get(status),
        }
    }
    if job_id is not None:  # only errors about one job carry it
        body["error"]["job_id"] = job_id
    return body


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
    job_id: str | None = None,
) -> Response:
    response = jsonify(error_body(status, message, param=param, code=code, job_id=job_id))
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _validation(error: HTTPError) -> tuple[str, str | None]:
    """APIFlask's validation detail {location: {field: [messages]}} as one line and the first field."""
    parts, first = [], None
    for fields in (error.detail or {}).values():
        for name, messages in (fields or {}).items():
            name = name or "body"
            first = first or name
            text = "; ".join(messages) if isinstance(messages, list) else str(messages)
            parts.append(f"{name}: {text}")
    return ("; ".join(parts) or "invalid request"), first


def _http_error_message(error: HTTPError) -> str:
    return _validation(error)[0] if error.status_code == 400 and error.detail else error.message or "error"


def _werkzeug_message(error: HTTPException) -> str:
    if error.code == 413:
        return "request body: larger than this server accepts (see max_body_bytes, max_upload_bytes)"
    if error.code == 400:
        return f"request body: {error.description or 'malformed request'}"
    return error.description or error.name


def _werkzeug_headers(error: HTTPException) -> dict[str, str]:
    """The headers werkzeug's own page would carry (e.g. a 405's `Allow`), less its HTML type."""
    return {name: value for name, value in error.get_headers() if name.lower() != "content-type"}


def _retry_after(seconds: int) -> dict[str, str]:
    return {"Retry-After": str(seconds)}


@dataclass(frozen=True)
class ErrorRule:
    """How one exception type is answered. Each callable takes the exception."""

    status: Callable[[Any], int]
    message: Callable[[Any], str] = str
    param: Callable[[Any], str | None] = lambda e: None
    code: str | None = None
    headers: Callable[[Any], dict[str, str]] = field(default=lambda e: {})
    job_id: Callable[[Any], str | None] = lambda e: None


def _always(status: int) -> Callable[[Any], int]:
    return lambda e: status


ERRORS: dict[type[Exception], ErrorRule] = {
    HTTPError: ErrorRule(
        status=lambda e: e.status_code,
        message=_http_error_message,
        param=lambda e: _validation(e)[1] if e.status_code == 400 and e.detail else None,
        headers=lambda e: dict(e.headers or {}),
    ),
    HTTPException: ErrorRule(
        status=lambda e: e.code or 500, message=_werkzeug_message, headers=lambda e: _werkzeug_headers(e)
    ),
    InvalidParameter: ErrorRule(status=_always(400), param=lambda e: e.param),
    TooLarge: ErrorRule(status=_always(413), param=lambda e: e.param, code="payload_too_large"),
    IdempotencyKeyReused: ErrorRule(
        status=_always(422), param=lambda e: e.param, code="idempotency_key_reused", job_id=lambda e: e.job_id
    ),
    ValueError: ErrorRule(status=_always(400)),  # raised by a library on our behalf: still the input's fault
    QueueFull: ErrorRule(
        status=_always(429), code="queue_full", headers=lambda e: _retry_after(e.retry_after)
    ),
    Forbidden: ErrorRule(status=_always(403)),
    JobNotFound: ErrorRule(status=_always(404), param=lambda e: "id"),
    NoResult: ErrorRule(status=_always(409)),
    ModelNotReady: ErrorRule(
        status=_always(503),
        message=lambda e: f"not ready: {e.reason}",
        headers=lambda e: _retry_after(e.retry_after),
    ),
    JobFailed: ErrorRule(
        status=lambda e: JOB_OUTCOME_STATUS[e.outcome],
        code="job_failed",
        job_id=lambda e: e.job_id,
        headers=lambda e: _retry_after(SHUTDOWN_RETRY_SECONDS) if e.outcome == "stopped" else {},
    ),
    EngineClosed: ErrorRule(
        status=_always(503),
        message=lambda e: "the service is shutting down and takes no new jobs",
        code="shutting_down",
        headers=lambda e: _retry_after(SHUTDOWN_RETRY_SECONDS),
    ),
    ServerBusy: ErrorRule(
        status=_always(503), code="server_busy", headers=lambda e: _retry_after(e.retry_after)
    ),
    StoreUnavailable: ErrorRule(
        status=_always(503), code="store_unavailable", headers=lambda e: _retry_after(e.retry_after)
    ),
}


def error_for(error: Exception) -> Response:
    """The response for any exception: the rule of its nearest type in `ERRORS`, else a 500."""
    rule = next((ERRORS[t] for t in type(error).__mro__ if t in ERRORS), None)
    if rule is None:
        logger.exception("unexpected error", exc_info=error)  # the traceback goes to the log, never out
        return error_response(500, "internal error; the server log has the details")
    return error_response(
        rule.status(error),
        rule.message(error),
        param=rule.param(error),
        code=rule.code,
        headers=rule.headers(error),
        job_id=rule.job_id(error),
    )


def register(app: APIFlask) -> None:
    """Install `error_for` for every type in the table (replacing APIFlask's own HTTP error handler,
    which Flask would otherwise prefer as the more specific one) and for any other exception."""
    for exception_type in (*ERRORS, Exception):
        app.register_error_handler(exception_type, error_for)
