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


class RateLimiter:
    """A token bucket per client: `per_minute` requests, refilled continuously."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, last time)
        self._lock = threading.Lock()

    def acquire(self, client: str) -> float:
        """0 if the request may go ahead, else the seconds until it may."""
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[client] = (tokens - 1, now)
                return 0.0
            self._buckets[client] = (tokens, now)
            if len(self._buckets) > 100_000:  # bound memory: forget idle clients
                self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 120}
            return (1 - tokens) / self.rate


def client_label(key: str | None) -> str:
    """How logs name a client: a short hash of its key (never the key), or its address."""
    if key:
        return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]
    return request.remote_addr or "unknown"


def install(app: Flask, config: ServiceConfig) -> None:
    keys = [k.encode() for k in config.api_keys]
    limiter = RateLimiter(config.rate_limit) if config.rate_limit else None

    def is_public(path: str) -> bool:
        return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)

    @app.before_request
    def guard() -> Response | None:
        if request.method == "OPTIONS" and config.cors_origins:
            return None  # a CORS preflight carries no credentials
        if is_public(request.path):
            return None
        key = None
        if keys:
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                return error_response(
                    401,
                    "authentication: send the API key as 'Authorization: Bearer KEY'",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            if not any(hmac.compare_digest(token.encode(), k) for k in keys):
                return error_response(
                    401, "authentication: the API key is not valid", headers={"WWW-Authenticate": "Bearer"}
                )
            key = token
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
        is_upload = request.mimetype == "multipart/form-data"  # bounded by MAX_CONTENT_LENGTH instead
        if (request.content_length or 0) > config.max_body_bytes and not is_upload:
            return error_response(413, f"request body: at most {config.max_body_bytes} bytes")
        return None

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
