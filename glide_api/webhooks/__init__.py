"""Webhooks as the Standard Webhooks specification has them: signed POSTs of events, retried with
backoff, to targets checked against request forgery. Knows nothing of jobs beyond their ids and of
HTTP servers: `server/job_webhooks.py` connects it to the engine's status changes.
"""

from .durable_outbox import SqliteOutbox
from .outbox import Attempt, Delivery, MemoryOutbox, Outbox, Subscription
from .redis_outbox import LEASE_MARGIN, RedisOutbox
from .sender import Sender
from .signing import WebhookSecret
from .targets import Target, check_literal, refusal

__all__ = [
    "LEASE_MARGIN",
    "Attempt",
    "Delivery",
    "MemoryOutbox",
    "Outbox",
    "RedisOutbox",
    "Sender",
    "SqliteOutbox",
    "Subscription",
    "Target",
    "WebhookSecret",
    "check_literal",
    "refusal",
]
