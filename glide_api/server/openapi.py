"""What `/openapi.json` says beyond each route's own models: every error answer, in one schema.

Each way a request can fail is a `Cause`: its status, the `code` its body carries (as
`server/errors.py` sends it), the headers that come with it, and when it happens. A route lists the
causes its handler can give, `@bp.doc(responses=error_responses(...))`; `install` adds those of the
request guard (`auth.py`) to every operation it guards, registers the shared schemas and fills in the
bounds this server is configured with. A status's description lists its causes, and its schema the
`code`s its body may carry, so the document answers "what can this route answer, and why" for every
route, and a contract test can check it.

A method a path does not take is a 405 with `Allow` (`docs/api.md`); it belongs to no operation.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from apiflask import APIFlask
from pydantic import BaseModel

from ..config import ServiceConfig
from .auth import is_public
from .schemas import CONFIGURED, ErrorOut

COMPONENTS = "#/components/schemas/"
RETRY_AFTER = {"Retry-After": "seconds after which a retry is likely to succeed"}


@dataclass(frozen=True)
class Cause:
    """One way a request fails: `status`, the body's `code`, `headers` always sent with it (name ->
    what it says), and `when` it happens."""

    status: int
    code: str | None
    when: str
    headers: tuple[tuple[str, str], ...] = ()


def _retrying(status: int, code: str, when: str) -> Cause:
    return Cause(status, code, when, tuple(RETRY_AFTER.items()))


# ---- what the routes' handlers give ---------------------------------------------------------------

INVALID = Cause(400, None, "a parameter breaks a rule or a limit of this server: `param` names it")
FORBIDDEN = Cause(403, "forbidden", "API keys are configured and this is not an admin key (`admin_keys`)")
NOT_FOUND = Cause(404, "not_found", "no such job for this caller: unknown, no longer kept, or another key's")
NOT_FINISHED = Cause(409, "not_finished", "the job has no images: it has not succeeded (yet)")
CANCELLED = Cause(409, "job_failed", "the job was cancelled while this request waited; `job_id` names it")
UPLOAD_TOO_LARGE = Cause(
    413,
    "payload_too_large",
    "an uploaded image has more than `max_image_pixels` pixels (read from its header); `param` names it",
)
KEY_REUSED = Cause(
    422,
    "idempotency_key_reused",
    "this caller's `Idempotency-Key` was used for another request (route or body) within `idempotency_ttl`",
)
KEY_JOB_GONE = Cause(
    422,
    "idempotency_key_reused",
    "the `Idempotency-Key` submitted a job that is no longer kept; `job_id` names it",
)
QUEUE_FULL = _retrying(429, "queue_full", "`max_queue` jobs are waiting; nothing was queued")
JOB_FAILED = Cause(500, "job_failed", "the job failed (the message says why); `job_id` names it")
NOT_READY = _retrying(503, "not_ready", "the models are loading, or could not be loaded (see `/readyz`)")
SHUTTING_DOWN = _retrying(503, "shutting_down", "the server is shutting down and takes no new jobs")
STOPPED = _retrying(503, "job_failed", "the server stopped while this request waited; `job_id` names the job")
SYNC_BUSY = _retrying(503, "server_busy", "`max_sync_waits` synchronous requests are already waiting")
STREAMS_BUSY = _retrying(503, "server_busy", "`max_open_streams` event streams are already open")
KEY_BUSY = _retrying(
    503, "server_busy", "another request with this `Idempotency-Key` is still being submitted"
)
TIMED_OUT = Cause(
    504,
    "job_failed",
    "the job still runs after `sync_timeout` seconds and goes on: `job_id` names it (`GET /v1/jobs/{id}`)",
)

# Making a job (with an `Idempotency-Key`, perhaps finding it), and waiting for it (a synchronous request).
SUBMIT = (INVALID, KEY_REUSED, KEY_JOB_GONE, QUEUE_FULL, NOT_READY, SHUTTING_DOWN, KEY_BUSY)
WAIT = (CANCELLED, JOB_FAILED, STOPPED, SYNC_BUSY)

# ---- what the request guard gives (`auth.py`) -------------------------------------------------------

URL_TOO_LONG = Cause(414, "uri_too_long", "the URL (path and query) is longer than `max_url_bytes`")
NO_KEY = Cause(
    401,
    "invalid_api_key",
    "only with API keys configured: the `Authorization: Bearer KEY` header is missing or its key unknown",
    (("WWW-Authenticate", "Bearer"),),
)
RATE_LIMITED = _retrying(
    429,
    "rate_limit_exceeded",
    "more than `rate_limit` requests a minute from this key or address, or (with API keys) more than "
    "`auth_failures_per_minute` failed authentications from this address",
)
BAD_BODY = Cause(400, None, "the body is not JSON, or is nested too deeply")
BODY_TOO_LARGE = Cause(
    413, "payload_too_large", "the body is larger than `max_body_bytes` (JSON) or the upload limit (forms)"
)
UNSUPPORTED_TYPE = Cause(
    415,
    "unsupported_media_type",
    "the body is neither `application/json` nor a form (multipart or urlencoded)",
)


def guard_causes(path: str, *, has_body: bool) -> tuple[Cause, ...]:
    """What the guard before every request can answer for an operation at `path`."""
    if is_public(path):
        return (URL_TOO_LONG,)
    body = (BAD_BODY, BODY_TOO_LARGE, UNSUPPORTED_TYPE) if has_body else ()
    return (URL_TOO_LONG, NO_KEY, RATE_LIMITED, *body)


def error_responses(*causes: Cause) -> dict[int, dict[str, Any]]:
    """The `responses` of `@bp.doc` for these causes: one per status, the shared error schema."""
    responses: dict[int, dict[str, Any]] = {}
    for cause in causes:
        _add(responses, cause)
    return responses


def _add(responses: dict[Any, dict[str, Any]], cause: Cause) -> None:
    """Add `cause` to its status's response, creating it: its line in the description, its `code` to
    the codes the body may carry, its headers (required only if every cause of the status sends them)."""
    key = next((k for k in responses if str(k) == str(cause.status)), cause.status)
    line = f"- `{cause.code}`: {cause.when}" if cause.code else f"- {cause.when}"
    headers = {
        name: {"description": text, "required": True, "schema": _header_schema(name)}
        for name, text in cause.headers
    }
    response = responses.get(key)
    if response is None:
        schema = {
            "allOf": [schema_ref(ErrorOut)],
            "properties": {"error": {"properties": {"code": {"enum": [cause.code]}}}},
        }
        responses[key] = {
            "description": line,
            "content": {"application/json": {"schema": schema}},
            **({"headers": headers} if headers else {}),
        }
        return
    if line not in response["description"].splitlines():
        response["description"] += "\n" + line
    codes = response["content"]["application/json"]["schema"]["properties"]["error"]["properties"]["code"]
    if cause.code not in codes["enum"]:
        codes["enum"].append(cause.code)
    merged = response.setdefault("headers", {})
    for name, header in merged.items():
        header["required"] = header["required"] and name in headers
    for name, header in headers.items():
        merged.setdefault(name, header | {"required": False})
    if not merged:
        del response["headers"]


def _header_schema(name: str) -> dict[str, Any]:
    return {"type": "integer", "minimum": 1} if name == "Retry-After" else {"type": "string"}


def event_stream_content(
    description: str, events: dict[str, type[BaseModel]], *, ids: bool
) -> dict[str, Any]:
    """The `content` of a server-sent events response. Its schema describes one event (as OpenAPI 3.2's
    `itemSchema` does, and schemathesis reads it): `event` its type, `data` one line of JSON whose
    schema `events` gives per type, and (`ids`) an `id` to resume after."""
    each = [
        {
            "description": model.__doc__ or name,
            "properties": {
                "event": {"const": name},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": schema_ref(model),
                },
            },
        }
        for name, model in events.items()
    ]
    properties = {"id": {"type": "string", "pattern": "^[0-9]+$"}} if ids else {}
    keep_alive = "A `: keep-alive` comment comes after `stream_heartbeat` seconds without an event."
    return {
        "text/event-stream": {
            "schema": {
                "description": f"{description} {keep_alive}",
                "type": "object",
                "required": ["event", "data"],
                "properties": properties,
                "oneOf": each,
            }
        }
    }


_MODELS: dict[str, type[BaseModel]] = {}


def schema_ref(model: type[BaseModel]) -> dict[str, str]:
    """A reference to `model`'s component schema, which `install` adds to the document (unless the
    routes' own models already put one of that name there)."""
    _MODELS[model.__name__] = model
    return {"$ref": COMPONENTS + model.__name__}


def _register(schemas: dict[str, Any], model: type[BaseModel]) -> None:
    """Add `model` and the models it refers to that the document does not have yet."""
    found = model.model_json_schema(ref_template=COMPONENTS + "{model}")
    defs = found.pop("$defs", {}) | {model.__name__: found}
    wanted = [model.__name__]
    while wanted:
        name = wanted.pop()
        if name in schemas:
            continue
        schemas[name] = defs[name]
        wanted += [ref.removeprefix(COMPONENTS) for ref in _refs(defs[name])]


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return ([node["$ref"]] if "$ref" in node else []) + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def install(app: APIFlask, config: ServiceConfig) -> None:
    """Make the app's document complete: the shared schemas, the guard's answers on every operation
    it guards, the API key requirement where keys are configured, and the configured bounds."""
    # The routes say which errors they give; APIFlask's own guesses carry its {detail, message} shape.
    app.config.update(
        AUTO_404_RESPONSE=False, AUTO_VALIDATION_ERROR_RESPONSE=False, AUTO_AUTH_ERROR_RESPONSE=False
    )
    if config.all_api_keys:
        app.config["SECURITY_SCHEMES"] = {"BearerAuth": {"type": "http", "scheme": "bearer"}}

    @app.spec_processor
    def complete(spec: dict[str, Any]) -> dict[str, Any]:
        spec = copy.deepcopy(spec)  # routes may share response objects; each operation gets its own
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        for model in _MODELS.values():
            _register(schemas, model)
        for path, operations in spec.get("paths", {}).items():
            for operation in operations.values():
                for cause in guard_causes(path, has_body="requestBody" in operation):
                    _add(operation["responses"], cause)
                if config.all_api_keys and not is_public(path):
                    operation["security"] = [{"BearerAuth": []}]
        _fill_configured(spec, config)
        return spec


def _fill_configured(node: Any, config: ServiceConfig) -> None:
    """Replace each `configured(...)` marker by the bounds it names, as this server has them."""
    if isinstance(node, dict):
        for keyword, setting in node.pop(CONFIGURED, {}).items():
            node[keyword] = getattr(config, setting)
        for value in node.values():
            _fill_configured(value, config)
    elif isinstance(node, list):
        for value in node:
            _fill_configured(value, config)
