"""Where a webhook may go, and the one POST that goes there.

No request forgery: a target whose host is not in the allow list must resolve only to public
addresses. An address is refused when it is not globally routable (private, loopback, link-local,
shared, documentation, reserved, unspecified ...) or is multicast; an IPv6 address that carries an
IPv4 one (IPv4-mapped, 6to4) is judged by that IPv4 address too. The check runs on the addresses
the name resolves to at delivery time, and the connection goes to the address checked (so a DNS
answer that changes in between, "rebinding", cannot slip through); the Host header and the TLS
server name stay the URL's host. Redirects are never followed (a 3xx is a failed attempt), every
attempt has one deadline for connecting, sending and reading the answer, and no more than
`RESPONSE_BYTES_READ` of an answer's body is read.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import InvalidParameter, WebhookRefused

MAX_URL_CHARS = 2048
RESPONSE_BYTES_READ = 512  # of a failed answer's body, to show why; a 2xx's body is not read
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Target:
    """A checked webhook URL, split into what a connection needs."""

    url: str
    scheme: str
    host: str  # lower case; an IPv6 literal without brackets
    port: int
    path: str  # path and query, as sent in the request line

    @classmethod
    def parse(cls, url: object, *, name: str = "webhook") -> Target:
        """A well-formed http(s) URL with a host, or `InvalidParameter` naming `name` and the rule."""
        if not isinstance(url, str) or not url:
            raise InvalidParameter(f"{name}: must be an http:// or https:// URL")
        if len(url) > MAX_URL_CHARS:
            raise InvalidParameter(f"{name}: at most {MAX_URL_CHARS} characters (got {len(url)})")
        if not url.isascii() or any(c.isspace() or ord(c) < 32 or c == "\x7f" for c in url):
            raise InvalidParameter(f"{name}: must be ASCII without spaces or control characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as e:
            raise InvalidParameter(f"{name}: not a valid URL ({e})") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise InvalidParameter(f"{name}: must be an http:// or https:// URL (got {scheme or 'none'})")
        if not parts.hostname:
            raise InvalidParameter(f"{name}: the URL has no host")
        if parts.username is not None or parts.password is not None:
            raise InvalidParameter(f"{name}: must not hold a user name or password (it is shown on the job)")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(url, scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80), path)

    def allowed(self, allow_hosts: Iterable[str]) -> bool:
        """Whether the host is one an operator listed (then any address of it may be reached)."""
        return self.host in {h.strip().lower().strip("[]") for h in allow_hosts}

    def literal(self) -> Address | None:
        """The host as an IP address, when it is one."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None


def refusal(address: Address) -> str | None:
    """Why webhooks may not reach `address`, or None if they may."""
    if isinstance(address, ipaddress.IPv6Address):
        carried = address.ipv4_mapped or address.sixtofour
        if carried is not None and (why := refusal(carried)):
            return f"{why} (carried in {address})"
    if address.is_multicast:
        return f"{address} is a multicast address"
    if not address.is_global:
        kind = next(
            (
                label
                for label, flag in (
                    ("loopback", address.is_loopback),
                    ("link-local", address.is_link_local),
                    ("unspecified", address.is_unspecified),
                    ("private", address.is_private),
                    ("reserved", address.is_reserved),
                )
                if flag
            ),
            "non-public",
        )
        return f"{address} is a {kind} address"
    return None


def check_literal(target: Target, allow_hosts: Iterable[str], *, name: str = "webhook") -> None:
    """At submit: refuse (naming `name`) a host that is a forbidden IP address or `localhost`, unless
    listed. Names are resolved only at delivery, never on a request thread."""
    if target.allowed(allow_hosts):
        return
    address = target.literal()
    why = refusal(address) if address is not None else None
    if why is None and (target.host == "localhost" or target.host.endswith(".localhost")):
        why = f"{target.host} is a loopback name"
    if why:
        raise InvalidParameter(
            f"{name}: {why}; webhooks only go to public addresses unless the host is in webhook_allow_hosts"
        )


def resolve(target: Target, allow_hosts: Iterable[str]) -> list[tuple[int, Address]]:
    """The addresses to connect to (family, address), every one of them checked: `WebhookRefused`
    if any is forbidden (a name with one private address is refused as a whole); `OSError` when the
    name does not resolve."""
    found = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    addresses = []
    for family, _, _, _, sockaddr in found:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if (family, address) not in addresses:
            addresses.append((family, address))
    if not target.allowed(allow_hosts):
        for _, address in addresses:
            if why := refusal(address):
                raise WebhookRefused(f"{target.host} resolves to {why}; not in webhook_allow_hosts")
    return addresses


@dataclass(frozen=True)
class Answer:
    """What one attempt got: the HTTP status, or None and why no answer came."""

    status: int | None
    error: str | None = None
    retry_after: float | None = None  # seconds the receiver asked for (Retry-After), if it did

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def post(
    target: Target,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: float,
    allow_hosts: Iterable[str],
    tls: ssl.SSLContext | None = None,
) -> Answer:
    """POST `body` to `target` once, within `timeout` seconds in all. `WebhookRefused` for a
    forbidden address; any other failure is an `Answer` with its error."""
    connection = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
    cut = threading.Event()
    timer: threading.Timer | None = None
    try:
        # Resolved and checked here, at every attempt; WebhookRefused propagates (no retry helps).
        raw = _connect(resolve(target, allow_hosts), target.port, timeout)
        # One deadline for the whole attempt: a receiver trickling its answer is cut off at it.
        timer = threading.Timer(timeout, _cut, (raw, cut))
        timer.daemon = True
        timer.start()
        if target.scheme == "https":
            context = tls or ssl.create_default_context()
            raw = context.wrap_socket(raw, server_hostname=target.host)
        connection.sock = raw  # connected to the checked address; Host stays the URL's host
        connection.request("POST", target.path, body=body, headers=headers)
        response = connection.getresponse()
        if 200 <= response.status < 300:
            return Answer(response.status)
        text = response.read(RESPONSE_BYTES_READ).decode("utf-8", "replace").strip()
        hint = " (redirects are not followed)" if 300 <= response.status < 400 else ""
        message = f"HTTP {response.status}{hint}" + (f": {text}" if text else "")
        return Answer(response.status, message, _retry_after(response.getheader("Retry-After")))
    except (OSError, http.client.HTTPException) as e:
        if cut.is_set() or isinstance(e, TimeoutError):
            return Answer(None, f"timed out after {timeout:g} s (webhook_timeout)")
        return Answer(None, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
    finally:
        if timer is not None:
            timer.cancel()
        connection.close()


def _retry_after(value: str | None) -> float | None:
    """A Retry-After header's seconds (a number of seconds, or an HTTP date); None if absent or
    unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        from email.utils import parsedate_to_datetime

        return max(0.0, parsedate_to_datetime(text).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _connect(addresses: list[tuple[int, Address]], port: int, timeout: float) -> socket.socket:
    error: OSError | None = None
    for family, address in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect((str(address), port))
            return sock
        except OSError as e:
            sock.close()
            error = e
    assert error is not None  # getaddrinfo answers at least one address or raises
    raise error


def _cut(sock: socket.socket, cut: threading.Event) -> None:
    """Past the deadline: wake whatever reads or writes `sock`, so that the attempt ends."""
    cut.set()
    with contextlib.suppress(OSError):  # already closed: the attempt ended by itself
        sock.shutdown(socket.SHUT_RDWR)
