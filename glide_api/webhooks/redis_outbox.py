"""`RedisOutbox`: the outbox of a fleet (`--queue redis://…`), on its Redis, shared by every API
replica and worker: any of them enqueues the statuses it sees a job reach, and any that has the
webhook secret sends what is due.

    job:<id>:webhook      hash: url, statuses, events (JSON), gone, enqueued:<status> per status
                          enqueued (set once: HSETNX, so a status is enqueued once fleet-wide)
    job:<id>:webhook-log  list: the attempts, as JSON, oldest first
    webhooks:deliveries   hash: delivery id -> its fields as JSON, with its due time (as text,
                          exact) and its place "<seq>:<id>" in the two sorted sets below
    webhooks:bodies       hash: delivery id -> its body
    webhooks:due          sorted set: place -> due time, for the deliveries no process holds
                          (the seq in the place orders those due at the same time as they were made)
    webhooks:held         sorted set: place -> when its hold ends (ms, Redis's clock)
    webhooks:holds        hash: delivery id -> the token of the take that holds it
    webhooks:busy         hash: job id -> its delivery held now (one per job)
    webhooks:pending      hash: job id -> how many of its deliveries are not delivered or given up
    webhooks:subscribed   sorted set: job id -> order subscribed (the `keep` bound)
    webhooks:order        counter for both orders

Every method is one Lua script or one read, so it is atomic across processes. A take holds its
delivery for `lease` seconds of Redis's clock (size it as an attempt's deadline and a margin): a
process that dies holding one never records it, and once the hold ends the next take offers it
again, under the same `webhook-id` (at least once). A record is the holder's only while its hold
stands (each take has its own token): a late one from a holder that lost its hold is logged, and a
410 still ends the subscription, but the delivery is left to its new holder.

A job's webhook keys expire when the job's keys do (`keep_finished_seconds` after it finished; not
while it runs), or `retention` seconds after their last change for a job the store does not hold;
the `keep` most recent subscriptions are kept, as in `MemoryOutbox`. Redis unreachable: every call
raises `StoreUnavailable`.
"""

from __future__ import annotations

import json
import math
import threading
import uuid
from typing import Any

from ..redis_link import RedisLink
from .outbox import Attempt, Delivery, Subscription

LEASE_MARGIN = 15.0  # seconds past an attempt's deadline before a held delivery is offered again

_GLOBAL = ("deliveries", "bodies", "due", "held", "holds", "busy", "pending", "subscribed", "order")

# Shared by every script: the keys by name (KEYS[10..12]: the job's, for the scripts about one job).
_PRELUDE = """
local deliveries, bodies, due, held, holds, busy, pending, subscribed, order =
    KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local sub, log, job = KEYS[10], KEYS[11], KEYS[12]

local function id_of(place) return string.sub(place, 18) end  -- after "%016d:"

-- The job's webhook keys expire as its own keys do; after default_ms for a job the store lacks.
local function follow(default_ms)
    local ttl = redis.call('PTTL', job)
    if ttl == -2 then ttl = default_ms end
    for _, key in ipairs({sub, log}) do
        if ttl < 0 then redis.call('PERSIST', key) else redis.call('PEXPIRE', key, math.max(ttl, 1)) end
    end
end

local function release(id, d)
    redis.call('ZREM', held, d.place)
    redis.call('HDEL', holds, id)
    if redis.call('HGET', busy, d.job_id) == id then redis.call('HDEL', busy, d.job_id) end
end

local function drop(id, d)
    release(id, d)
    redis.call('ZREM', due, d.place)
    redis.call('HDEL', deliveries, id)
    redis.call('HDEL', bodies, id)
    if redis.call('HINCRBY', pending, d.job_id, -1) <= 0 then redis.call('HDEL', pending, d.job_id) end
end
"""

# ARGV: job id, url, statuses, events, keep, default_ms. Returns the job ids whose subscriptions the
# bound dropped (their keys are deleted by the caller).
_SUBSCRIBE = """
redis.call('DEL', sub, log)
redis.call('HSET', sub, 'url', ARGV[2], 'statuses', ARGV[3], 'events', ARGV[4])
follow(tonumber(ARGV[6]))
redis.call('ZADD', subscribed, redis.call('INCR', order), ARGV[1])
local over = redis.call('ZCARD', subscribed) - tonumber(ARGV[5])
local dropped = {}
if over > 0 then
    for _, old in ipairs(redis.call('ZRANGE', subscribed, 0, -1)) do
        if over == 0 then break end
        if old ~= ARGV[1] and redis.call('HEXISTS', pending, old) == 0 then
            redis.call('ZREM', subscribed, old)
            table.insert(dropped, old)
            over = over - 1
        end
    end
end
return dropped
"""

# ARGV: delivery id, job id, status, fields (JSON), body, due, default_ms. 1 if enqueued.
_ENQUEUE = """
if redis.call('EXISTS', sub) == 0 or redis.call('HGET', sub, 'gone') then return 0 end
if redis.call('HSETNX', sub, 'enqueued:' .. ARGV[3], 1) == 0 then return 0 end
local d = cjson.decode(ARGV[4])
d.place = string.format('%016d:%s', redis.call('INCR', order), ARGV[1])
d.due = ARGV[6]
redis.call('HSET', deliveries, ARGV[1], cjson.encode(d))
redis.call('HSET', bodies, ARGV[1], ARGV[5])
redis.call('ZADD', due, ARGV[6], d.place)
redis.call('HINCRBY', pending, ARGV[2], 1)
follow(tonumber(ARGV[7]))
return 1
"""

# ARGV: now (the caller's clock, for due times), token, lease_ms. {fields, body} or nil.
_TAKE = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, place in ipairs(redis.call('ZRANGEBYSCORE', held, '-inf', now_ms)) do  -- holds that ended
    local fields = redis.call('HGET', deliveries, id_of(place))
    if fields then
        local d = cjson.decode(fields)
        release(id_of(place), d)
        redis.call('ZADD', due, d.due, place)
    else
        redis.call('ZREM', held, place)
    end
end
for _, place in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', ARGV[1])) do
    local id = id_of(place)
    local fields = redis.call('HGET', deliveries, id)
    local d = cjson.decode(fields)
    if redis.call('HEXISTS', busy, d.job_id) == 0 then
        redis.call('ZREM', due, place)
        redis.call('ZADD', held, now_ms + tonumber(ARGV[3]), place)
        redis.call('HSET', holds, id, ARGV[2])
        redis.call('HSET', busy, d.job_id, id)
        return {fields, redis.call('HGET', bodies, id)}
    end
end
return false
"""

# The earliest due time of a delivery of a job with none held, or nil.
_NEXT_DUE = """
local items = redis.call('ZRANGE', due, 0, -1, 'WITHSCORES')
for i = 1, #items, 2 do
    local d = cjson.decode(redis.call('HGET', deliveries, id_of(items[i])))
    if redis.call('HEXISTS', busy, d.job_id) == 0 then return items[i + 1] end
end
return false
"""

# ARGV: delivery id, token, outcome, next attempt at ('' for none), attempt number, attempt (JSON),
# default_ms, job id.
_RECORD = """
if redis.call('EXISTS', sub) == 1 then
    redis.call('RPUSH', log, ARGV[6])
    if ARGV[3] == 'gone' then redis.call('HSET', sub, 'gone', 1) end
    follow(tonumber(ARGV[7]))
end
local fields = redis.call('HGET', deliveries, ARGV[1])
if fields and redis.call('HGET', holds, ARGV[1]) == ARGV[2] then
    local d = cjson.decode(fields)
    if ARGV[3] == 'retrying' and ARGV[4] ~= '' then
        release(ARGV[1], d)
        d.due = ARGV[4]
        d.attempts = tonumber(ARGV[5])
        redis.call('HSET', deliveries, ARGV[1], cjson.encode(d))
        redis.call('ZADD', due, ARGV[4], d.place)
    else
        drop(ARGV[1], d)
    end
end
if ARGV[3] == 'gone' then  -- the job's later events, enqueued already, are not sent either
    local all = redis.call('HGETALL', deliveries)
    for i = 1, #all, 2 do
        local d = cjson.decode(all[i + 1])
        if d.job_id == ARGV[8] then drop(all[i], d) end
    end
end
return 1
"""


def _number(value: float) -> str:
    """A float as text that Redis and Python read back as the same float."""
    return repr(float(value))


class RedisOutbox:
    """`Outbox` on the Redis at `url` (see the module docstring); `keep` bounds the subscriptions as
    in `MemoryOutbox`, `lease` is how long a take holds its delivery, `retention` how long the
    webhook keys of a job the store does not hold last."""

    shared = True  # other processes enqueue and take: a sender looks again every so often

    def __init__(self, url: str, *, keep: int, lease: float, retention: float) -> None:
        self._link = RedisLink(url)
        self._r = self._link.client
        self._keep = keep
        self._lease_ms = math.ceil(lease * 1000)
        self._retention_ms = math.ceil(retention * 1000)
        self._globals = [self._link.key(f"webhooks:{name}") for name in _GLOBAL]
        self._subscribe, self._enqueue, self._take, self._next_due, self._record = (
            self._r.register_script(_PRELUDE + body)
            for body in (_SUBSCRIBE, _ENQUEUE, _TAKE, _NEXT_DUE, _RECORD)
        )
        self._lock = threading.Lock()
        self._tokens: dict[str, str] = {}  # delivery id -> the token of this process's take of it
        self._closed = False

    def _keys(self, job_id: str | None = None) -> list[str]:
        if job_id is None:
            return self._globals
        return [*self._globals, *self._job_keys(job_id), self._link.job(job_id)]

    def _job_keys(self, job_id: str) -> tuple[str, str]:
        return self._link.job(job_id, "webhook"), self._link.job(job_id, "webhook-log")

    def subscribe(self, job_id: str, subscription: Subscription) -> None:
        args = [
            job_id,
            subscription.url,
            json.dumps(sorted(subscription.statuses)),
            json.dumps(subscription.events),
            self._keep,
            self._retention_ms,
        ]
        with self._link.guard():
            dropped = self._subscribe(self._keys(job_id), args)
            if dropped:
                self._r.delete(*(key for old in dropped for key in self._job_keys(old.decode())))

    def wants(self, job_id: str, status: str) -> Subscription | None:
        with self._link.guard():
            url, statuses, events, gone, enqueued = self._r.hmget(
                self._job_keys(job_id)[0], "url", "statuses", "events", "gone", f"enqueued:{status}"
            )
        if url is None or gone or enqueued:
            return None
        wanted = frozenset(json.loads(statuses))
        return Subscription(url.decode(), wanted, tuple(json.loads(events))) if status in wanted else None

    def enqueue(self, delivery: Delivery) -> bool:
        fields = {
            "id": delivery.id,
            "job_id": delivery.job_id,
            "status": delivery.status,
            "event": delivery.event,
            "url": delivery.url,
            "attempts": delivery.attempts,
        }
        args = [
            delivery.id,
            delivery.job_id,
            delivery.status,
            json.dumps(fields),
            delivery.body,
            _number(delivery.due),
            self._retention_ms,
        ]
        with self._link.guard():
            return bool(self._enqueue(self._keys(delivery.job_id), args))

    def take(self, now: float) -> Delivery | None:
        token = uuid.uuid4().hex
        with self._link.guard():
            taken = self._take(self._keys(), [_number(now), token, self._lease_ms])
        if not taken:
            return None
        fields, body = json.loads(taken[0]), taken[1]
        with self._lock:
            self._tokens[fields["id"]] = token
        return Delivery(
            id=fields["id"],
            job_id=fields["job_id"],
            status=fields["status"],
            event=fields["event"],
            url=fields["url"],
            body=body,
            due=float(fields["due"]),
            attempts=int(fields["attempts"]),
        )

    def next_due(self) -> float | None:
        with self._link.guard():
            due = self._next_due(self._keys())
        return None if due is None else float(due)

    def record(self, delivery: Delivery, attempt: Attempt) -> None:
        with self._lock:
            token = self._tokens.pop(delivery.id, "")
            if self._closed:  # an attempt that outlived the sender's close: offered again after its hold
                return
        args = [
            delivery.id,
            token,
            attempt.outcome,
            "" if attempt.next_attempt_at is None else _number(attempt.next_attempt_at),
            attempt.attempt,
            json.dumps(attempt.to_dict()),
            self._retention_ms,
            delivery.job_id,
        ]
        with self._link.guard():
            self._record(self._keys(delivery.job_id), args)

    def pending(self) -> int:
        with self._link.guard():
            return int(self._r.hlen(self._globals[0]))

    def describe(self, job_id: str) -> dict[str, Any] | None:
        sub, log = self._job_keys(job_id)
        with self._link.guard(), self._r.pipeline() as pipe:  # MULTI: one consistent read
            pipe.hmget(sub, "url", "events")
            pipe.lrange(log, 0, -1)
            (url, events), attempts = pipe.execute()
        if url is None:
            return None
        return {
            "url": url.decode(),
            "events": json.loads(events),
            "deliveries": [json.loads(text) for text in attempts],
        }

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._tokens.clear()
        self._link.close()
