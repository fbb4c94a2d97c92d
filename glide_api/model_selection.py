"""Which models to load and where they run: the options `serve`, `generate`, `inpaint` share.

`ModelSelection.specs()` is the one place where a model choice ("official" or "demo"), the per-role
model names ("base", a model folder, "none") and the shipped demo's names become what each role
loads. `GlidePipeline.from_selection` loads exactly that. No torch here: the command line's help
and the service settings read this module.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from . import checks
from .errors import InvalidParameter

# Each role and the official model that fills it by default (also the kind of model it needs).
MODEL_ROLES: dict[str, str] = {
    "base": "base",
    "upsample": "upsample",
    "base_inpaint": "base-inpaint",
    "upsample_inpaint": "upsample-inpaint",
}
TASK_ROLES: dict[str, tuple[str, str]] = {
    "text2im": ("base", "upsample"),
    "inpaint": ("base_inpaint", "upsample_inpaint"),
}
TASK_LABELS: dict[str, str] = {"text2im": "text-to-image", "inpaint": "inpainting"}
# Each kind of request (`options.TASKS`) and the capability (`TASK_ROLES`) whose models make it:
# image-to-image runs the text-to-image models from a noised picture.
TASK_CAPABILITY: dict[str, str] = {"text2im": "text2im", "inpaint": "inpaint", "img2img": "text2im"}
# The roles the shipped demo fills, with its models' names (it has no inpainting models).
DEMO_ROLES: dict[str, str] = {"base": "demo-base", "upsample": "demo-upsample"}
MODEL_CHOICES: tuple[str, ...] = ("official", "demo")
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")
PRECISION_SETTINGS: tuple[str, ...] = ("auto", *PRECISIONS)
NONE = "none"  # a role given as "none" is not loaded


def _help(text: str, **extra: object) -> dict[str, object]:
    return {"help": text, **extra}


@dataclass(frozen=True)
class ModelSelection:
    """Which models fill each role, on which device, in which precision, from which weights cache."""

    model: str = field(
        default="official",
        metadata=_help(
            "official (the GLIDE checkpoints, downloaded once) or demo (the small shipped shapes "
            "models: offline, no inpainting); demo replaces the model settings left at their defaults",
            choices=MODEL_CHOICES,
        ),
    )
    base: str = field(
        default=MODEL_ROLES["base"],
        metadata=_help("base model: an official name or a model folder", metavar="MODEL"),
    )
    upsample: str = field(
        default=MODEL_ROLES["upsample"],
        metadata=_help(
            "upsampler: an official name or a model folder; 'none' for 64 px only", metavar="MODEL"
        ),
    )
    base_inpaint: str = field(
        default=MODEL_ROLES["base_inpaint"],
        metadata=_help("inpainting base model; 'none' disables inpainting", metavar="MODEL"),
    )
    upsample_inpaint: str = field(
        default=MODEL_ROLES["upsample_inpaint"],
        metadata=_help("inpainting upsampler; 'none' for 64 px edits", metavar="MODEL"),
    )
    device: str = field(default="auto", metadata=_help("auto (cuda if available), cpu, cuda, cuda:N"))
    precision: str = field(
        default="auto",
        metadata=_help(
            "auto (fp16 on CUDA, the reference's mixed precision; fp32 elsewhere), fp32, fp16 or bf16",
            choices=PRECISION_SETTINGS,
        ),
    )
    offline: bool = field(
        default=False,
        metadata=_help("never download; fail if a model is not cached (also GLIDE_API_OFFLINE=1)"),
    )
    cache_dir: str | None = field(
        default=None,
        metadata=_help(
            "the weights cache (default: GLIDE_API_CACHE, else the user cache folder)", metavar="DIR"
        ),
    )
    batch_invariant: bool = field(
        default=True,
        metadata=_help(
            "run each sample's rows alone so a seed's image never depends on its batch-mates "
            "(off: one tensor per batch, faster on GPUs)"
        ),
    )

    def __post_init__(self) -> None:
        checks.one_of("model", self.model, MODEL_CHOICES)
        checks.one_of("precision", self.precision, PRECISION_SETTINGS)

    def specs(self, roles: Iterable[str] = MODEL_ROLES) -> dict[str, str | None]:
        """What each of `roles` loads: an official name or a model folder's path; None: nothing.

        With `model` "demo", the roles still at their official default take the shipped demo
        folders (the demo has no inpainting models: those roles load nothing). The demo's own names
        ("demo-base", "demo-upsample") also stand for its folders.
        """
        from .demo import DEMO_MODELS

        chosen = {role: getattr(self, role) for role in roles}
        if self.model == "demo":
            missing = [str(f) for f in DEMO_MODELS.values() if not (f / "config.json").is_file()]
            if missing:
                raise InvalidParameter(
                    f"model: the demo models are missing from this installation ({', '.join(missing)}); "
                    "reinstall glide-api"
                )
            chosen = {
                role: DEMO_ROLES.get(role, NONE) if spec == MODEL_ROLES[role] else spec
                for role, spec in chosen.items()
            }
        return {
            role: None if spec.lower() == NONE else str(DEMO_MODELS.get(spec, spec))
            for role, spec in chosen.items()
        }

    def task_specs(self, task: str) -> dict[str, str | None]:
        """The models one task needs (the other task's roles load nothing); refuses a task whose
        base model is configured off."""
        checks.one_of("task", task, TASK_ROLES)
        specs = self.specs(TASK_ROLES[task])
        base_role = TASK_ROLES[task][0]
        if specs[base_role] is None:
            raise InvalidParameter(
                f"{base_role}: {task} needs a {MODEL_ROLES[base_role]} model"
                + (" (the demo models have none)" if self.model == "demo" else "")
            )
        return specs


def demo_advice(task: str, *, command: str = "serve") -> str | None:
    """The way forward when `task`'s official weights cannot be had: the shipped demo, which needs
    no download; None for a task the demo cannot do."""
    checks.one_of("task", task, TASK_ROLES)
    if TASK_ROLES[task][0] not in DEMO_ROLES:
        return None
    return (
        f"glide-api {command} --model demo works offline now "
        "(small shipped models that draw simple shapes; nothing to download)"
    )
