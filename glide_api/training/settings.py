"""Training settings: one frozen dataclass, its defaults in one place (no torch import: the CLI reads it)."""

from __future__ import annotations

from dataclasses import dataclass

from .. import checks
from ..errors import InvalidParameter
from ..model_selection import PRECISION_SETTINGS
from ..options import GUIDANCE_SCALE

SAVE_DTYPES = ("fp32", "fp16")
# Training keeps float32 master weights: fp16 storage (the reference's sampling precision) is not one.
TRAIN_PRECISIONS = tuple(p for p in PRECISION_SETTINGS if p != "fp16")
# What a resumed run may change: the output schedule, and the learning rate (a manual step decay);
# any other setting would change what the earlier steps meant.
RESUMABLE_SETTINGS = (
    "steps",
    "lr",
    "save_every",
    "sample_every",
    "sample_count",
    "sample_steps",
    "guidance_scale",
    "save_dtype",
)
MSE_WEIGHTINGS = ("eps", "p2", "truncated-snr")  # see losses.py


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Defaults suit fine-tuning; the demo's settings are in glide_api/demo/README.md."""

    steps: int = 1000  # total optimiser steps of the run (a resumed run continues to this)
    batch_size: int = 8
    lr: float = 1e-4
    warmup_steps: int = 0  # linear warm-up of the learning rate
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
    text_lr_scale: float = 1.0  # the text encoder's learning rate, as a multiple of lr
    ema_rate: float = 0.9999  # reached gradually: decay_n = min(rate, (1 + n) / (10 + n))
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    caption_dropout: float = 0.2  # share of captions replaced by "" (classifier-free guidance)
    vb_lambda: float = 0.001  # improved DDPM's λ
    mse_weighting: str = "eps"  # eps (GLIDE's plain ε-MSE), p2 or truncated-snr; see losses.py
    offset_noise: float = 0.0  # std of a per-image, per-channel constant added to the noise (0: off)
    crop_min: float = 0.9  # random square crops of crop_min..1 of the short side
    flip: bool = False  # horizontal flips (off: captions may say left or right)
    patch_size: int | None = None  # upsamplers: train on random patches of this size
    train_size: int | None = None  # base models: train on images of this size (default: the model's)
    seed: int = 0
    save_every: int = 500
    sample_every: int = 500  # 0: no preview grids
    sample_count: int = 8
    sample_steps: str = "50"  # respacing of the preview sampler
    guidance_scale: float = GUIDANCE_SCALE.default  # of the base previews
    save_dtype: str = "fp32"  # of model.safetensors (training-state.pt is always float32)

    def __post_init__(self) -> None:
        optional = ("train_size",) if self.train_size is not None else ()
        for name in ("steps", "batch_size", "sample_count", *optional):
            checks.integer(name, getattr(self, name), minimum=1)
        for name in ("warmup_steps", "save_every", "sample_every", "seed"):
            checks.integer(name, getattr(self, name), minimum=0)
        if not self.text_lr_scale >= 0:
            raise InvalidParameter(f"text_lr_scale: must be non-negative (got {self.text_lr_scale})")
        if not self.lr > 0:
            raise InvalidParameter(f"lr: must be positive (got {self.lr})")
        if not 0.0 <= self.ema_rate < 1.0:
            raise InvalidParameter(f"ema_rate: must be in [0, 1) (got {self.ema_rate})")
        for name in ("weight_decay", "grad_clip", "vb_lambda", "offset_noise"):
            if not getattr(self, name) >= 0:
                raise InvalidParameter(f"{name}: must be non-negative (got {getattr(self, name)})")
        if self.mse_weighting not in MSE_WEIGHTINGS:
            raise InvalidParameter(
                f"mse_weighting: must be one of {', '.join(MSE_WEIGHTINGS)} (got {self.mse_weighting!r})"
            )
        if self.save_dtype not in SAVE_DTYPES:
            raise InvalidParameter(
                f"save_dtype: must be one of {', '.join(SAVE_DTYPES)} (got {self.save_dtype!r})"
            )
