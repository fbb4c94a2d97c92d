"""`IdempotencyKeys` on a fleet's Redis, so a key sent to any replica finds the same job.

Each (scope, key) is one string key `glide:idempotency:<sha256 of scope and key>` holding the
record as JSON ({fingerprint, token, job_id}); Redis expires it: `claim_seconds` while held, `ttl`
once bound. A claim is `SET NX PX` (atomic across replicas); `bind` and `release` are scripts that
act only while the record still carries the claim's token.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets

from .idempotency_keys import CLAIM_SECONDS, Claim, _found, _Record
from .redis_store import RedisLink

_BIND = """
local held = redis.call('GET', KEYS[1])
if not held or cjson.decode(held).token ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""

_RELEASE = """
local held = redis.call('GET', KEYS[1])
if not held then return 0 end
local record = cjson.decode(held)
if record.token ~= ARGV[1] or record.job_id ~= cjson.null then return 0 end
return redis.call('DEL', KEYS[1])
"""


class RedisIdempotencyKeys:
    """The fleet's records (see the module docstring); their number is bounded by their expiry."""

    def __init__(self, link: RedisLink, *, ttl: float, claim_seconds: float = CLAIM_SECONDS) -> None:
        self._link = link
        self._r = link.client
        self._ttl_ms = max(1, math.ceil(ttl * 1000))
        self._hold_ms = max(1, math.ceil(min(claim_seconds, ttl) * 1000))
        self._bind = self._r.register_script(_BIND)
        self._release = self._r.register_script(_RELEASE)

    def _key(self, scope: str, key: str) -> str:
        digest = hashlib.sha256(f"{scope}\0{key}".encode()).hexdigest()
        return self._link.key(f"idempotency:{digest}")

    def claim(self, *, scope: str, key: str, fingerprint: str) -> Claim:
        name = self._key(scope, key)
        token = secrets.token_hex(16)
        held = json.dumps({"fingerprint": fingerprint, "token": token, "job_id": None})
        with self._link.guard():
            while True:
                if self._r.set(name, held, nx=True, px=self._hold_ms):
                    return Claim("new", scope, key, token=token)
                raw = self._r.get(name)
                if raw is None:
                    continue  # expired between the two calls: try to take it again
                data = json.loads(raw)
                record = _Record(data["fingerprint"], data["token"], data["job_id"], math.inf)
                found = _found(record, scope, key, fingerprint, 0.0)
                assert found is not None  # an unexpired record always decides
                return found

    def bind(self, claim: Claim, job_id: str) -> None:
        name = self._key(claim.scope, claim.key)
        with self._link.guard():
            raw = self._r.get(name)
            if raw is None:
                return
            bound = {**json.loads(raw), "job_id": job_id}
            self._bind([name], [claim.token, json.dumps(bound), self._ttl_ms])

    def release(self, claim: Claim) -> None:
        with self._link.guard():
            self._release([self._key(claim.scope, claim.key)], [claim.token])

    def close(self) -> None:
        """The records stay in Redis for the other replicas."""
