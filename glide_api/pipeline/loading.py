"""Models ready to sample: weights resolved, network built once, on its device, in its precision."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import checks, demo
from ..errors import InvalidParameter
from ..model_selection import PRECISION_SETTINGS
from ..models.config import ModelConfig
from ..models.glide import GlideUNet, create_model
from ..models.resolve import resolve_model
from ..models.tokenizer import Tokenizer, load_tokenizer
from ..models.weights_source import WeightsSource

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A network with the tokenizer that feeds it and the name it was loaded by."""

    name: str  # an official name, or the model folder it came from
    network: GlideUNet
    tokenizer: Tokenizer

    @property
    def config(self) -> ModelConfig:
        return self.network.config

    def describe(self) -> dict[str, object]:
        c = self.config
        return {
            "name": self.name,
            "kind": c.kind,
            "image_size": c.image_size,
            "parameters": sum(p.numel() for p in self.network.parameters()),
            "text_ctx": c.text_ctx,
            "noise_schedule": c.noise_schedule,
            "tokenizer": self.tokenizer.kind,
            "n_vocab": c.n_vocab,
            "dtype": str(self.network.dtype).removeprefix("torch."),
            **(
                {"about": demo.DEMO_ABOUT, "example_prompt": demo.DEMO_EXAMPLE}
                if self.name in demo.DEMO_MODELS
                else {}
            ),
        }


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidParameter("device: cuda was asked for but no CUDA device is available")
    return resolved


# The dtype of the torso weights in each precision (GlideUNet.convert_torso); fp32 converts nothing.
STORAGE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matmuls natively (avx512_bf16 or AMX), as oneDNN reports it."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def resolve_precision(precision: str, device: torch.device) -> str:
    """ "auto" is the reference's choice: fp16 on CUDA, fp32 elsewhere. fp16 needs CUDA.

    bf16 is never chosen by "auto": it is about 3x faster on a CPU with native bf16 but not exact
    (about 2% relative error in a forward, docs/speed.md), and float32 is this project's promise.
    """
    checks.one_of("precision", precision, PRECISION_SETTINGS)
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise InvalidParameter("precision: fp16 runs on CUDA only; use fp32 or bf16 on this device")
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        logger.warning("precision bf16: this CPU has no native bf16 (avx512_bf16, AMX): slower than fp32")
    return precision


def prepare(model: GlideUNet, *, device: torch.device, precision: str) -> GlideUNet:
    """Move a network to its device with its torso stored in its precision, converted once here."""
    if precision in STORAGE_DTYPES:
        model.convert_torso(STORAGE_DTYPES[precision])
    return model.to(device)


def load_model(spec: str, *, device: torch.device, precision: str, source: WeightsSource) -> LoadedModel:
    """Load an official checkpoint by name, or a model folder by path, ready for sampling.

    The shipped demo models load by name too (``demo-base``, ``demo-upsample``) and keep that name
    when given as their folder. A folder's own tokenizer (tokenizer.json, or the GPT-2 files) is
    used when it has one; its vocabulary must match the config's ``n_vocab``. Official files come
    from `source` (the cache, downloaded there if missing and allowed).
    """
    start = time.perf_counter()
    path = demo.DEMO_MODELS.get(spec, spec)
    config, state_dict = resolve_model(str(path), source=source)
    network = prepare(create_model(config, state_dict), device=device, precision=precision)
    folder = Path(path) if Path(path).is_dir() else None
    tokenizer = load_tokenizer(folder=folder, source=source)
    if tokenizer.n_vocab != config.n_vocab:
        raise InvalidParameter(
            f"{spec}: its {tokenizer.kind} tokenizer has {tokenizer.n_vocab} tokens but "
            f"config.json says n_vocab={config.n_vocab}"
        )
    name = demo.demo_name(path) or spec
    logger.info(
        "loaded model %s (%s, %d px) on %s in %s in %.1f s",
        name,
        config.kind,
        config.image_size,
        device,
        precision,
        time.perf_counter() - start,
    )
    return LoadedModel(name=name, network=network, tokenizer=tokenizer)
