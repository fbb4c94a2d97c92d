"""Every error the HTTP app sends, in one place and one shape.

Body: `{"error": {"message", "type", "param", "code"}}` (OpenAI's shape, used by every route, so a
client parses errors one way). Domain errors map to statuses here and nowhere else.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from apiflask import APIFlask, HTTPError
from flask import Response, jsonify
from werkzeug.exceptions import HTTPException

from ..errors import EngineClosed, GlideError, JobNotFound, ModelNotReady, NoResult, QueueFull

logger = logging.getLogger(__name__)

# "name: rule" — our ValueErrors start with the parameter they are about.
_PARAM = re.compile(r"^([A-Za-z_][A-Za-z0-9_\[\]]*): ")
_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
}
_CODES = {
    401: "invalid_api_key",
    404: "not_found",
    405: "method_not_allowed",
    409: "not_finished",
    413: "payload_too_large",
    415: "unsupported_media_type",
    503: "not_ready",
}


class JobFailed(GlideError):
    """A synchronous request's job failed, was cancelled or took longer than the server waits.
    `job_id` goes into the error body, so a client learns which job without reading the message."""

    def __init__(self, message: str, *, status: int, job_id: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.job_id = job_id


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
    job_id: str | None = None,
) -> Response:
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
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def invalid(error: ValueError) -> Response:
    """A domain ValueError as 400, its leading "name:" as the param."""
    message = str(error)
    match = _PARAM.match(message)
    return error_response(400, message, param=match.group(1) if match else None)


def _validation_message(detail: Any) -> tuple[str, str | None]:
    """APIFlask's validation detail {location: {field: [messages]}} as one line and the first field."""
    parts, first = [], None
    for fields in (detail or {}).values():
        for field, messages in (fields or {}).items():
            name = field or "body"
            first = first or name
            text = "; ".join(messages) if isinstance(messages, list) else str(messages)
            parts.append(f"{name}: {text}")
    return ("; ".join(parts) or "invalid request"), first


def register(app: APIFlask) -> None:
    """Install the handlers; they replace APIFlask's own for HTTP errors."""

    @app.errorhandler(HTTPError)
    def http_error(error: HTTPError) -> Response:
        status = error.status_code
        if status == 400 and error.detail:  # request validation
            message, param = _validation_message(error.detail)
            return error_response(400, message, param=param, headers=dict(error.headers or {}))
        return error_response(status, error.message or "error", headers=dict(error.headers or {}))

    @app.errorhandler(HTTPException)
    def werkzeug_error(error: HTTPException) -> Response:
        status = error.code or 500
        if status == 413:
            message = "request body: larger than this server accepts (see max_body_bytes, max_upload_bytes)"
        elif status == 400:
            message = f"request body: {error.description or 'malformed request'}"
        else:
            message = error.description or error.name
        return error_response(status, message)

    @app.errorhandler(ValueError)
    def value_error(error: ValueError) -> Response:
        return invalid(error)

    @app.errorhandler(QueueFull)
    def queue_full(error: QueueFull) -> Response:
        return error_response(
            429, str(error), code="queue_full", headers={"Retry-After": str(error.retry_after)}
        )

    @app.errorhandler(JobNotFound)
    def job_not_found(error: JobNotFound) -> Response:
        return error_response(404, str(error), param="id")

    @app.errorhandler(NoResult)
    def no_result(error: NoResult) -> Response:
        return error_response(409, str(error))

    @app.errorhandler(ModelNotReady)
    def not_ready(error: ModelNotReady) -> Response:
        return error_response(
            503, f"not ready: {error.reason}", headers={"Retry-After": str(error.retry_after)}
        )

    @app.errorhandler(JobFailed)
    def job_failed(error: JobFailed) -> Response:
        return error_response(error.status, str(error), code="job_failed", job_id=error.job_id)

    @app.errorhandler(EngineClosed)
    def closed(error: EngineClosed) -> Response:
        return error_response(503, "the service is shutting down", headers={"Retry-After": "30"})

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        logger.exception("unexpected error")  # the traceback goes to the log, never to the client
        return error_response(500, "internal error; the server log has the details")
