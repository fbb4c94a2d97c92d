"""Request guards: API keys (Bearer), a per-key rate limit, body size limits, CORS.

Keys are compared in constant time and never logged: the log names a client by a short hash.
Public paths (the UI's page and assets, the docs, health checks) need no key; every API does.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from collections.abc import Callable

from flask import Flask, Response, g, request

from ..config import ServiceConfig
from .errors import error_response

PUBLIC_PREFIXES = ("/static/", "/docs", "/openapi.json", "/healthz", "/readyz")
PUBLIC_PATHS = ("/", "/favicon.ico")


def is_public(path: str) -> bool:
    """Whether `path` is served without a key, rate limit or body rules (the URL limit holds)."""
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


class RateLimiter:
    """A token bucket per client: `per_minute` requests, refilled continuously. It remembers at most
    `max_clients` clients: past that, those idle long enough to be full again are forgotten, then
    the longest idle ones, so no flood of new addresses or keys grows it without bound."""

    def __init__(
        self, per_minute: int, *, clock: Callable[[], float] = time.monotonic, max_clients: int = 100_000
    ) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, last time)
        self._lock = threading.Lock()

    def acquire(self, client: str) -> float:
        """0 if the request may go ahead (a token is taken), else the seconds until it may."""
        now = self.clock()
        with self._lock:
            tokens = self._tokens(client, now)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
            self._buckets.pop(client, None)  # re-inserted last: the dict stays in order of use
            self._buckets[client] = (tokens - 1 if wait == 0 else tokens, now)
            if len(self._buckets) > self.max_clients:
                self._forget(now)
            return wait

    def wait(self, client: str) -> float:
        """The seconds until `client` may go ahead (0: now), taking nothing."""
        now = self.clock()
        with self._lock:
            tokens = self._tokens(client, now)
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate

    def __len__(self) -> int:
        """How many clients it remembers now."""
        return len(self._buckets)

    def __contains__(self, client: str) -> bool:
        return client in self._buckets

    def _tokens(self, client: str, now: float) -> float:
        tokens, last = self._buckets.get(client, (self.capacity, now))
        return min(self.capacity, tokens + (now - last) * self.rate)

    def _forget(self, now: float) -> None:
        refill = 60.0  # seconds after which any bucket is full again: the same as never seen
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < refill}
        for client in list(self._buckets)[: max(0, len(self._buckets) - self.max_clients)]:
            del self._buckets[client]  # the longest idle first


def key_id(key: str) -> str:
    """A key's identity, not a secret: a hash of it (never the key). The jobs a key submits carry it
    as their owner; logs show its first 8 digits."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:32]


def client_label(key: str | None) -> str:
    """How logs name a client: a short hash of its key (never the key), or its address."""
    if key:
        return key_id(key)[:12]
    return request.remote_addr or "unknown"


# The original route that generates on GET: a HEAD must not start a generation just to send headers.
GENERATING_GETS = ("/image",)
BODY_TYPES = ("application/json", "multipart/form-data", "application/x-www-form-urlencoded")
FORM_TYPES = BODY_TYPES[1:]


def _body_rules(config: ServiceConfig) -> Response | None:
    """The rules every request body obeys, whatever its route: no HEAD that would generate; a body is
    JSON (`application/json`) or a form (files as `multipart/form-data`), never JSON guessed from
    another type (which any web page could send without a CORS preflight); JSON within
    `max_body_bytes` however it is sent (a chunked body has no Content-Length to check), and nested
    no deeper than the parser can take."""
    if request.method == "HEAD" and request.path in GENERATING_GETS:
        return error_response(405, "method: HEAD would run a generation; use GET", headers={"Allow": "GET"})
    has_body = (request.content_length or 0) > 0 or "chunked" in request.headers.get("Transfer-Encoding", "")
    if not has_body:
        return None
    if request.mimetype not in BODY_TYPES:
        shown = request.mimetype or "none"
        return error_response(
            415, f"Content-Type: send JSON as application/json, or files as multipart/form-data (got {shown})"
        )
    if request.mimetype in FORM_TYPES:
        return None  # bounded by MAX_CONTENT_LENGTH (two uploads and the form fields)
    # Read at most one byte past the limit (a chunked body is cut there, not read to its end), and
    # keep what was read: the route's JSON parsing uses it.
    request.max_content_length = config.max_body_bytes + 1
    too_long = (request.content_length or 0) > config.max_body_bytes
    if too_long or len(request.get_data(cache=True)) > config.max_body_bytes:
        return error_response(413, f"request body: at most {config.max_body_bytes} bytes")
    try:
        request.get_json(silent=False)  # parsed once here (Flask keeps it for the route)
    except RecursionError:
        return error_response(400, "request body: JSON nested too deeply", param="body")
    return None


def install(app: Flask, config: ServiceConfig) -> None:
    """The guard before every request. With keys, it leaves `g.owner` (the caller's `key_id`) and
    `g.admin` (an admin key?) for the routes' rules (`owners`); without keys both are unset."""
    keys = [k.encode() for k in config.all_api_keys]
    admin_keys = config.all_admin_keys
    limiter = RateLimiter(config.rate_limit) if config.rate_limit else None
    failures = RateLimiter(config.auth_failures_per_minute)

    @app.before_request
    def guard() -> Response | None:
        url_bytes = len(request.path.encode()) + len(request.query_string)
        if url_bytes > config.max_url_bytes:  # before anything reads the query
            return error_response(
                414,
                f"URL: at most {config.max_url_bytes} bytes (max_url_bytes; got {url_bytes})",
                param="url",
            )
        if request.method == "OPTIONS" and config.cors_origins:
            return None  # a CORS preflight carries no credentials
        if is_public(request.path):
            return None
        key = None
        if keys:
            address = request.remote_addr or "unknown"
            # Guessing keys is throttled per address, before any key is compared.
            if (wait := failures.wait(address)) > 0:
                return error_response(
                    429,
                    f"authentication: more than {config.auth_failures_per_minute} failed attempts a "
                    "minute from this address",
                    code="rate_limit_exceeded",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                failures.acquire(address)
                return error_response(
                    401,
                    "authentication: send the API key as 'Authorization: Bearer KEY'",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            if not any(hmac.compare_digest(token.encode(), k) for k in keys):
                failures.acquire(address)
                return error_response(
                    401, "authentication: the API key is not valid", headers={"WWW-Authenticate": "Bearer"}
                )
            key = token
            g.owner = key_id(key)
            g.admin = key in admin_keys
        g.client = client_label(key)
        if limiter is not None:
            wait = limiter.acquire(g.client)
            if wait > 0:
                return error_response(
                    429,
                    f"rate limit: at most {config.rate_limit} requests per minute",
                    code="rate_limit_exceeded",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
        return _body_rules(config)

    if config.cors_origins:
        allowed = set(config.cors_origins)

        @app.after_request
        def cors(response: Response) -> Response:
            origin = request.headers.get("Origin")
            if origin and ("*" in allowed or origin in allowed):
                response.headers["Access-Control-Allow-Origin"] = "*" if "*" in allowed else origin
                response.headers["Vary"] = "Origin"
                response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, Prefer"
                response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
                response.headers["Access-Control-Expose-Headers"] = "Retry-After, Location"
            return response
