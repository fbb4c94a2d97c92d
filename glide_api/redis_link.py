"""The connection to a fleet's Redis and the names of its keys, shared by the distributed engine
(`engine/redis_store.py`, `engine/redis_queue.py`) and the webhook outbox
(`webhooks/redis_outbox.py`). Every key is under `glide:`; each module's docstring lists its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import checks
from .errors import StoreUnavailable

PREFIX = "glide:"
POLL_SECONDS = 1.0  # longest blocking read: how soon a subscription notices close() or a gone job


class RedisLink:
    """One Redis connection pool and the key names; `guard()` turns connection failures into
    `StoreUnavailable`."""

    def __init__(self, url: str) -> None:
        self.url = checks.redis_url("queue", url)
        self.where = checks.without_password(url)
        # The socket timeout bounds every call (blocking reads take POLL_SECONDS): a Redis that
        # stopped answering is an error within seconds, never a hung request.
        self.client = redis.Redis.from_url(
            url, socket_timeout=POLL_SECONDS + 4, socket_connect_timeout=3, health_check_interval=15
        )

    @contextmanager
    def guard(self) -> Iterator[None]:
        try:
            yield
        except (RedisConnectionError, RedisTimeoutError, OSError) as e:
            raise StoreUnavailable(f"the job store (Redis at {self.where}) did not answer: {e}") from None

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except (RedisConnectionError, RedisTimeoutError, OSError):
            return False

    def job(self, job_id: str, part: str = "") -> str:
        return f"{PREFIX}job:{job_id}{f':{part}' if part else ''}"

    @staticmethod
    def key(name: str) -> str:
        return PREFIX + name

    def close(self) -> None:
        self.client.close()
