"""Standard Webhooks signatures (https://www.standardwebhooks.com/): the secret and the headers.

The secret is shown as `whsec_` + base64 of 24 to 64 random bytes; the key is those bytes. Each
attempt is signed anew, since its timestamp changes: `webhook-signature` is `v1,` + base64 of
HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass, field

from ..errors import InvalidParameter

PREFIX = "whsec_"
KEY_BYTES = (24, 64)  # the specification's bounds for a symmetric key (192 to 512 bits)


@dataclass(frozen=True)
class WebhookSecret:
    """A signing key, read from its `whsec_<base64>` form (`parse`)."""

    key: bytes = field(repr=False)

    @classmethod
    def parse(cls, text: str, *, name: str = "webhook_secret") -> WebhookSecret:
        """The key of `whsec_<base64>`; `InvalidParameter` naming `name` for anything else."""
        text = text.strip()
        if not text.startswith(PREFIX):
            raise InvalidParameter(f"{name}: must be {PREFIX}<base64 of 24 to 64 random bytes>")
        try:
            key = base64.b64decode(text[len(PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            raise InvalidParameter(f"{name}: the part after {PREFIX} is not base64") from None
        least, most = KEY_BYTES
        if not least <= len(key) <= most:
            raise InvalidParameter(f"{name}: the key must be {least} to {most} bytes (got {len(key)})")
        return cls(key)

    def sign(self, msg_id: str, timestamp: int, body: bytes) -> str:
        """The `webhook-signature` header value for one attempt."""
        signed = f"{msg_id}.{timestamp}.".encode() + body
        digest = hmac.new(self.key, signed, hashlib.sha256).digest()
        return "v1," + base64.b64encode(digest).decode("ascii")

    def headers(self, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        """The three Standard Webhooks headers of one attempt."""
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": self.sign(msg_id, timestamp, body),
        }
