"""Service settings: one dataclass, filled from defaults < config file < environment < CLI flags.

Every setting has one name, used everywhere: the field `max_batch_size` is the environment variable
`GLIDE_API_MAX_BATCH_SIZE`, the config-file key `max_batch_size` and the flag `--max-batch-size`.
`docs/configuration.md` (generated from `SETTINGS_TABLE`) lists them all.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from . import checks
from .errors import InvalidParameter
from .model_selection import ModelSelection
from .options import DIFFUSION_STEPS, STEPS, UPSAMPLE_STEPS

ENV_PREFIX = "GLIDE_API_"


@dataclass(frozen=True)
class ServiceConfig(ModelSelection):
    """Everything `glide-api serve` can be told: the models (`ModelSelection`), where it listens, the
    generation defaults and the limits (hard bounds enforced at the edge)."""

    # Where it listens.
    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=5000, metadata={"help": "TCP port (0: any free one; the log names it)"})
    threads: int = field(
        default=16,
        metadata={
            "help": "threads for short requests (health, status, submissions, images); event streams "
            "and synchronous waits have threads of their own"
        },
    )
    max_open_streams: int = field(
        default=128,
        metadata={"help": "event streams open at once (v1 events, OpenAI stream=true); more get a 503"},
    )
    max_sync_waits: int = field(
        default=64,
        metadata={"help": "synchronous requests waiting for their jobs at once; more get a 503"},
    )
    stream_heartbeat: float = field(
        default=15.0,
        metadata={
            "help": "seconds between keep-alive comments on a quiet event stream (so proxies keep it "
            "open); a client that left is noticed by the next one"
        },
    )
    max_connections: int = field(
        default=1000, metadata={"help": "client connections open at once; more wait to be accepted"}
    )
    client_timeout: float = field(
        default=30.0,
        metadata={"help": "seconds a connection may stay idle or half-sent before it is closed"},
    )
    max_url_bytes: int = field(default=8192, metadata={"help": "URL length (path and query); more is a 414"})
    shutdown_grace: float = field(
        default=60.0,
        metadata={"help": "seconds the running batch may take to finish after SIGTERM before it is stopped"},
    )
    # Generation defaults and limits.
    base_steps: str = field(default=STEPS.default, metadata={"help": f"default {STEPS.help}"})
    upsample_steps: str = field(default=UPSAMPLE_STEPS.default, metadata={"help": "default upsampler steps"})
    max_batch_size: int = field(default=4, metadata={"help": "images per request (n, batch_size)"})
    max_prompt_chars: int = field(default=1000, metadata={"help": "characters per prompt"})
    max_steps: int = field(default=DIFFUSION_STEPS, metadata={"help": "sampling steps per stage"})
    max_queue: int = field(default=32, metadata={"help": "jobs waiting; more are refused with 429"})
    max_batch_images: int = field(default=8, metadata={"help": "images merged into one sampling batch"})
    job_timeout: float = field(default=1800.0, metadata={"help": "seconds a job may run"})
    sync_timeout: float = field(
        default=900.0, metadata={"help": "seconds a synchronous request waits for its job"}
    )
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "where jobs, their events and images, and pending webhook deliveries are kept "
            "(SQLite and files), so they survive a restart or crash (docs/storage.md); default: the "
            "platform's user data folder (~/.local/share/glide-api on Linux); none: in memory only",
            "metavar": "DIR",
        },
    )
    queue: str | None = field(
        default=None,
        metadata={
            "help": "redis://HOST:PORT/DB: share jobs through this Redis (docs/scaling.md); `serve` then "
            "runs an API replica that loads no models and `glide-api worker` runs the jobs; unset: this "
            "process runs its jobs itself (kept in data_dir)",
            "metavar": "URL",
        },
    )
    claim_timeout: float = field(
        default=30.0,
        metadata={
            "help": "with a queue: seconds after a worker's last heartbeat before another worker takes "
            "over its jobs (each runs again from the start)"
        },
    )
    max_attempts: int = field(
        default=3,
        metadata={
            "help": "with a queue: workers a job may lose (killed while running it) before it ends failed"
        },
    )
    worker_id: str | None = field(
        default=None,
        metadata={"help": "a worker's name in GET /v1/workers (default: host name and a random suffix)"},
    )
    keep_finished: int = field(default=256, metadata={"help": "finished jobs (and images) kept"})
    keep_finished_bytes: int = field(
        default=1 << 30,
        metadata={
            "help": "bytes of images the kept finished jobs may hold (on disk with a data_dir); the "
            "oldest are evicted first (the newest finished job is always kept)"
        },
    )
    keep_finished_seconds: float = field(
        default=7 * 24 * 3600.0, metadata={"help": "seconds a finished job (and its images) is kept"}
    )
    idempotency_ttl: float = field(
        default=24 * 3600.0,
        metadata={
            "help": "seconds an Idempotency-Key is remembered (in the data dir, if any): the same key "
            "and request within it get the same job, another request with it a 422"
        },
    )
    idempotency_max_keys: int = field(
        default=100_000,
        metadata={"help": "Idempotency-Keys remembered at once; past it the oldest are forgotten first"},
    )
    preview_every: int = field(default=5, metadata={"help": "steps between progress previews (0: none)"})
    max_body_bytes: int = field(default=1 << 20, metadata={"help": "JSON request body size"})
    max_upload_bytes: int = field(default=8 << 20, metadata={"help": "uploaded image size (each file)"})
    max_image_pixels: int = field(
        default=4096 * 4096,
        metadata={
            "help": "pixels (width x height) of an uploaded image, read from its header before it is "
            "decoded; more is a 413"
        },
    )
    image_dir: str | None = field(
        default=None, metadata={"help": "also write images here (server-chosen names); default: memory only"}
    )
    # Safety.
    api_keys: tuple[str, ...] = field(
        default=(),
        repr=False,
        metadata={
            "help": "comma-separated Bearer keys; a flag shows in ps, so prefer api_keys_file or "
            "GLIDE_API_API_KEYS; no keys at all: no authentication"
        },
    )
    api_keys_file: str | None = field(
        default=None,
        metadata={
            "help": "a file of Bearer keys, one a line (blank lines and lines starting # skipped)",
            "metavar": "FILE",
        },
    )
    admin_keys: tuple[str, ...] = field(
        default=(),
        repr=False,
        metadata={
            "help": "comma-separated keys that may also make server-wide changes (POST /basemodel, "
            "/upmodel) and see every job; prefer admin_keys_file or GLIDE_API_ADMIN_KEYS"
        },
    )
    admin_keys_file: str | None = field(
        default=None,
        metadata={"help": "a file of admin keys, one a line (as api_keys_file)", "metavar": "FILE"},
    )
    rate_limit: int = field(
        default=0, metadata={"help": "requests per minute per key (or client address); 0: unlimited"}
    )
    auth_failures_per_minute: int = field(
        default=10,
        metadata={"help": "missing or wrong API keys per minute per client address; more is a 429"},
    )
    cors_origins: tuple[str, ...] = field(
        default=(), metadata={"help": "comma-separated origins allowed by CORS; empty: off"}
    )
    # Webhooks (docs/webhooks.md).
    webhook_secret: str | None = field(
        default=None,
        repr=False,
        metadata={
            "help": "whsec_<base64 of 24 to 64 random bytes>: the key webhooks are signed with; "
            "unset: jobs with a webhook are refused (400); prefer GLIDE_API_WEBHOOK_SECRET to a flag"
        },
    )
    webhook_allow_hosts: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "comma-separated webhook hosts that may resolve to private, loopback or other "
            "non-public addresses (every other target must be public)"
        },
    )
    webhook_timeout: float = field(
        default=15.0,
        metadata={"help": "seconds one delivery attempt may take in all (connect, send, answer)"},
    )
    webhook_attempts: int = field(
        default=8,
        metadata={"help": "attempts per webhook delivery, the first included, before it is given up"},
    )
    webhook_backoff: float = field(
        default=5.0,
        metadata={
            "help": "seconds before the first retry of a webhook delivery; each next wait is 4x longer"
        },
    )
    webhook_max_pending: int = field(
        default=1000,
        metadata={
            "help": "webhook deliveries waiting to be sent or retried; at this many, jobs with a "
            "webhook get a 503"
        },
    )
    webhook_workers: int = field(default=4, metadata={"help": "threads sending webhook deliveries"})
    public_url: str | None = field(
        default=None,
        metadata={
            "help": "the server's address as clients reach it (e.g. https://glide.example.com); webhook "
            "bodies then carry absolute image URLs, else paths"
        },
    )
    log_level: str = field(default="info", metadata={"help": "debug, info, warning, error"})

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in (
            "threads",
            "max_open_streams",
            "max_sync_waits",
            "max_connections",
            "max_url_bytes",
            "max_batch_size",
            "max_prompt_chars",
            "max_steps",
            "max_queue",
            "max_batch_images",
            "keep_finished",
            "keep_finished_bytes",
            "idempotency_max_keys",
            "max_body_bytes",
            "max_upload_bytes",
            "max_image_pixels",
            "auth_failures_per_minute",
            "webhook_attempts",
            "webhook_max_pending",
            "webhook_workers",
            "max_attempts",
        ):
            checks.integer(name, getattr(self, name), minimum=1)
        for name in ("port", "rate_limit", "preview_every"):
            checks.integer(name, getattr(self, name), minimum=0)
        for name in (
            "job_timeout",
            "sync_timeout",
            "client_timeout",
            "stream_heartbeat",
            "webhook_timeout",
            "webhook_backoff",
            "keep_finished_seconds",
            "claim_timeout",
            "idempotency_ttl",
        ):
            if not getattr(self, name) > 0:
                raise InvalidParameter(f"{name}: must be a positive number of seconds")
        if not self.shutdown_grace >= 0:
            raise InvalidParameter("shutdown_grace: must be zero or a positive number of seconds")
        if self.max_steps > DIFFUSION_STEPS:
            raise InvalidParameter(
                f"max_steps: the schedules have {DIFFUSION_STEPS} steps; it cannot be larger"
            )
        if self.max_batch_size > self.max_batch_images:
            raise InvalidParameter(
                "max_batch_size: cannot exceed max_batch_images (one job runs in one batch)"
            )
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise InvalidParameter(
                f"log_level: must be debug, info, warning or error (got {self.log_level!r})"
            )
        if self.public_url is not None and not self.public_url.startswith(("http://", "https://")):
            raise InvalidParameter(
                f"public_url: must start with http:// or https:// (got {self.public_url!r})"
            )
        if self.queue is not None:
            checks.redis_url("queue", self.queue)
        admin = frozenset(self.admin_keys) | _read_keys("admin_keys_file", self.admin_keys_file)
        keys = frozenset(self.api_keys) | _read_keys("api_keys_file", self.api_keys_file) | admin
        object.__setattr__(self, "_keys", (keys, admin))  # read once, at start; not a setting itself

    @property
    def store_dir(self) -> Path | None:
        """The data dir jobs are kept in (`data_dir`, else the platform's user data folder); None
        for "none": jobs in memory only."""
        if self.data_dir is None:
            import platformdirs

            return Path(platformdirs.user_data_dir("glide-api", appauthor=False))
        if self.data_dir.strip().lower() == "none":
            return None
        return Path(self.data_dir).expanduser()

    @property
    def all_api_keys(self) -> frozenset[str]:
        """Every key that authenticates: `api_keys`, `admin_keys` and their files. Empty: the server
        asks for no key."""
        return self._keys[0]

    @property
    def all_admin_keys(self) -> frozenset[str]:
        """The keys allowed server-wide changes and every job: `admin_keys` and its file."""
        return self._keys[1]

    # ---- sources ------------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        *,
        file: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> ServiceConfig:
        """Defaults, then the config file (TOML or JSON; `GLIDE_API_CONFIG` if not given), then the
        environment, then `overrides` (CLI flags; None values are ignored)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        file = file or env.get(f"{ENV_PREFIX}CONFIG")
        if file:
            values |= _read_file(Path(file))
        values |= _from_env(env)
        values |= {k: v for k, v in (overrides or {}).items() if v is not None}
        return cls.from_mapping(values)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ServiceConfig:
        """Build from a mapping of setting names to values (strings are parsed by the field's type)."""
        hints = get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidParameter(f"unknown setting(s) {', '.join(unknown)}; see docs/configuration.md")
        return cls(**{name: _coerce(name, hints[name], value) for name, value in values.items()})

    def public_dict(self) -> dict[str, Any]:
        """The settings with secrets removed (for logs and /v1/settings)."""
        data = dataclasses.asdict(self)
        data["api_keys"] = f"{len(self.all_api_keys)} configured" if self.all_api_keys else "none"
        data["admin_keys"] = f"{len(self.all_admin_keys)} configured" if self.all_admin_keys else "none"
        data["webhook_secret"] = "configured" if self.webhook_secret else "none"
        if self.queue is not None:
            data["queue"] = checks.without_password(self.queue)
        return data


def settings_table() -> str:
    """The Markdown table of every setting (docs/configuration.md is generated from it)."""
    rows = ["| setting | environment variable | flag | default | meaning |", "|---|---|---|---|---|"]
    for f in dataclasses.fields(ServiceConfig):
        default = f.default if f.default not in ((), None) else "—"
        rows.append(
            f"| `{f.name}` | `{ENV_PREFIX}{f.name.upper()}` | `--{f.name.replace('_', '-')}` "
            f"| `{default}` | {f.metadata['help']} |"
        )
    return "\n".join(rows)


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InvalidParameter(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover
                import tomli as tomllib
            data = tomllib.loads(text)
    except ValueError as e:
        raise InvalidParameter(f"config file {path}: {e}") from None
    if not isinstance(data, dict):
        raise InvalidParameter(f"config file {path}: must hold a table of settings")
    return data


def _read_keys(setting: str, path: str | None) -> frozenset[str]:
    """The keys in a keys file: one a line; blank lines and lines starting with # are skipped. The
    errors name the setting and the file, never a line of it."""
    if path is None:
        return frozenset()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidParameter(f"{setting}: {path} is not UTF-8 text") from None
    except OSError as e:
        raise InvalidParameter(f"{setting}: cannot read {path} ({e.strerror or type(e).__name__})") from None
    lines = (line.strip() for line in text.splitlines())
    keys = frozenset(line for line in lines if line and not line.startswith("#"))
    if not keys:
        raise InvalidParameter(f"{setting}: {path} holds no keys (one a line; # starts a comment)")
    return keys


def _from_env(env: Mapping[str, str]) -> dict[str, str]:
    names = {f.name for f in dataclasses.fields(ServiceConfig)}
    # GLIDE_API_CACHE and GLIDE_API_OFFLINE are the hub's own names for these two.
    aliases = {"CACHE": "cache_dir"}
    values = {}
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        name = aliases.get(name.upper(), name)
        if name in names:
            values[name] = value
    return values


def _coerce(name: str, kind: Any, value: Any) -> Any:
    """Parse strings from the environment, files or flags into the field's type."""
    if not isinstance(value, str):
        if kind == tuple[str, ...] and isinstance(value, list | tuple):
            return tuple(str(v) for v in value)
        return value
    text = value.strip()
    readable = getattr(kind, "__name__", str(kind))
    unreadable = InvalidParameter(f"{name}: cannot read {value!r} as {readable}")
    if kind is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off", ""):
            return False
        raise unreadable
    try:
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:
        raise unreadable from None
    if kind == tuple[str, ...]:
        return tuple(v.strip() for v in text.split(",") if v.strip())
    if kind == str | None and text == "":
        return None
    return value
