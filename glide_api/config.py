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
from .options import DIFFUSION_STEPS, STEPS, UPSAMPLE_STEPS

ENV_PREFIX = "GLIDE_API_"
MODEL_CHOICES = ("official", "demo")
MODEL_ROLES = ("base", "upsample", "base_inpaint", "upsample_inpaint")
_OFFICIAL_SPECS = {
    "base": "base",
    "upsample": "upsample",
    "base_inpaint": "base-inpaint",
    "upsample_inpaint": "upsample-inpaint",
}


def model_choice(model: str, specs: Mapping[str, str | None]) -> dict[str, str | None]:
    """The model settings after choosing `model`: "demo" replaces every role still at its official
    default with the shipped demo folder ("none" for the inpainting roles, which it lacks)."""
    if model == "official":
        return dict(specs)
    from .demo import DEMO_MODELS

    if not all((folder / "config.json").is_file() for folder in DEMO_MODELS.values()):
        raise ValueError(
            f"model: the demo models are missing from this installation (expected in "
            f"{DEMO_MODELS['demo-base'].parent}); reinstall glide-api"
        )
    demo = {
        "base": str(DEMO_MODELS["demo-base"]),
        "upsample": str(DEMO_MODELS["demo-upsample"]),
        "base_inpaint": "none",
        "upsample_inpaint": "none",
    }
    return {role: demo[role] if spec == _OFFICIAL_SPECS[role] else spec for role, spec in specs.items()}


@dataclass(frozen=True)
class ServiceConfig:
    """Everything `glide-api serve` can be told. Limits are hard bounds enforced at the edge."""

    # Where it listens.
    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=5000, metadata={"help": "TCP port"})
    threads: int = field(default=32, metadata={"help": "threads for waiting clients and event streams"})
    # Which models, where.
    model: str = field(
        default="official",
        metadata={
            "help": "official (the GLIDE checkpoints) or demo (the "
            "small shipped shapes models: offline, no "
            "inpainting); demo replaces the model "
            "settings left at their defaults"
        },
    )
    base: str = field(default="base", metadata={"help": "base model: official name or model folder"})
    upsample: str = field(
        default="upsample",
        metadata={"help": "upsampler: official name or model folder; 'none' for 64 px only"},
    )
    base_inpaint: str = field(
        default="base-inpaint", metadata={"help": "inpainting base model; 'none' disables inpainting"}
    )
    upsample_inpaint: str = field(
        default="upsample-inpaint", metadata={"help": "inpainting upsampler; 'none' for 64 px edits"}
    )
    device: str = field(default="auto", metadata={"help": "auto (cuda if available), cpu, cuda, cuda:N"})
    precision: str = field(
        default="auto", metadata={"help": "auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16"}
    )
    offline: bool = field(
        default=False, metadata={"help": "never download weights (also GLIDE_API_OFFLINE=1)"}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "weights cache (also GLIDE_API_CACHE)"})
    batch_invariant: bool = field(
        default=True,
        metadata={
            "help": "run each sample's rows alone so a "
            "seed's image never depends on its "
            "batch-mates (off: faster on GPUs)"
        },
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
    keep_finished: int = field(default=256, metadata={"help": "finished jobs (and images) kept"})
    preview_every: int = field(default=5, metadata={"help": "steps between progress previews (0: none)"})
    max_body_bytes: int = field(default=1 << 20, metadata={"help": "JSON request body size"})
    max_upload_bytes: int = field(default=8 << 20, metadata={"help": "uploaded image size (each file)"})
    image_dir: str | None = field(
        default=None, metadata={"help": "also write images here (server-chosen names); default: memory only"}
    )
    # Safety.
    api_keys: tuple[str, ...] = field(
        default=(), metadata={"help": "comma-separated Bearer keys; empty: no authentication"}
    )
    rate_limit: int = field(
        default=0, metadata={"help": "requests per minute per key (or client address); 0: unlimited"}
    )
    cors_origins: tuple[str, ...] = field(
        default=(), metadata={"help": "comma-separated origins allowed by CORS; empty: off"}
    )
    log_level: str = field(default="info", metadata={"help": "debug, info, warning, error"})

    def __post_init__(self) -> None:
        if self.model not in MODEL_CHOICES:
            raise ValueError(f"model: must be one of {', '.join(MODEL_CHOICES)} (got {self.model!r})")
        for role, spec in model_choice(self.model, {r: getattr(self, r) for r in MODEL_ROLES}).items():
            object.__setattr__(self, role, spec)
        for name in (
            "port",
            "threads",
            "max_batch_size",
            "max_prompt_chars",
            "max_steps",
            "max_queue",
            "max_batch_images",
            "keep_finished",
            "max_body_bytes",
            "max_upload_bytes",
        ):
            checks.integer(name, getattr(self, name), minimum=1)
        for name in ("rate_limit", "preview_every"):
            checks.integer(name, getattr(self, name), minimum=0)
        for name in ("job_timeout", "sync_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be a positive number of seconds")
        if self.max_steps > DIFFUSION_STEPS:
            raise InvalidParameter(
                f"max_steps: the schedules have {DIFFUSION_STEPS} steps; it cannot be larger"
            )
        if self.max_batch_size > self.max_batch_images:
            raise ValueError("max_batch_size: cannot exceed max_batch_images (one job runs in one batch)")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError(f"log_level: must be debug, info, warning or error (got {self.log_level!r})")

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
            raise ValueError(f"unknown setting(s) {', '.join(unknown)}; see docs/configuration.md")
        return cls(**{name: _coerce(name, hints[name], value) for name, value in values.items()})

    def model_spec(self, role: str) -> str | None:
        """The model for a role ('base', 'upsample', …), None where configured as 'none'.

        The demo models' names (demo-base, demo-upsample) are given as their shipped folders.
        """
        from .demo import DEMO_MODELS

        spec = getattr(self, role)
        if spec.lower() == "none":
            return None
        return str(DEMO_MODELS[spec]) if spec in DEMO_MODELS else spec

    def public_dict(self) -> dict[str, Any]:
        """The settings with secrets removed (for logs and /v1/settings)."""
        data = dataclasses.asdict(self)
        data["api_keys"] = f"{len(self.api_keys)} configured" if self.api_keys else "none"
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
        raise ValueError(f"config file not found: {path}")
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
        raise ValueError(f"config file {path}: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {path}: must hold a table of settings")
    return data


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
    try:
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind == tuple[str, ...]:
            return tuple(v.strip() for v in text.split(",") if v.strip())
    except ValueError:
        readable = getattr(kind, "__name__", str(kind))
        raise ValueError(f"{name}: cannot read {value!r} as {readable}") from None
    if kind == str | None and text == "":
        return None
    return value
