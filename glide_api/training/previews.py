"""Preview grids of a run: the EMA weights sampled through `GlidePipeline`, as samples/step-NNNNNNN.png."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from ..models.config import ModelConfig
from ..models.glide import GlideUNet
from ..models.tokenizer import Tokenizer
from ..pipeline import images
from ..pipeline.glide_pipeline import GlidePipeline
from ..pipeline.loading import LoadedModel
from ..pipeline.outputs import PipelineOutput
from ..pipeline.params import BatchSettings, Sample
from .data import Batch
from .plots import grid
from .settings import TrainConfig


@torch.no_grad()
def write_preview(
    *,
    ema: GlideUNet,
    tokenizer: Tokenizer,
    examples: Batch,
    config: TrainConfig,
    folder: Path,
    step: int,
    device: torch.device,
    precision: str,
) -> Path:
    """Sample `ema` for `examples` and write folder/step-NNNNNNN.png (and its prompts as .txt).

    A base model's grid is one row of samples of the captions (guidance `config.guidance_scale`);
    an upsampler's has three rows: the low-res input, the sample, the original.
    """
    folder.mkdir(parents=True, exist_ok=True)
    pipeline = _pipeline(ema, tokenizer, device=device, precision=precision)
    if ema.config.super_res:
        rows = _upsampler_rows(pipeline, ema.config, examples, config)
    else:
        rows = [_base_samples(pipeline, ema.config, examples.captions, config)]
    path = folder / f"step-{step:07d}.png"
    grid(rows).save(path)
    path.with_suffix(".txt").write_text("\n".join(examples.captions) + "\n", encoding="utf-8")
    return path


def _pipeline(ema: GlideUNet, tokenizer: Tokenizer, *, device: torch.device, precision: str) -> GlidePipeline:
    """The EMA model in a sampling pipeline, in the role its config says."""
    loaded = LoadedModel(name="ema", network=ema, tokenizer=tokenizer)
    role = "upsample" if ema.config.super_res else "base"
    return GlidePipeline(**{role: loaded}, device=device, precision=precision, batch_invariant=False)


def _base_samples(
    pipeline: GlidePipeline, c: ModelConfig, prompts: list[str], config: TrainConfig
) -> list[Image.Image]:
    settings = BatchSettings(
        size=c.image_size, base_respacing=config.sample_steps, diffusion_steps=c.diffusion_steps
    )
    samples = [Sample(prompt=p, seed=i, guidance_scale=config.guidance_scale) for i, p in enumerate(prompts)]
    output = next(e for e in pipeline.stream(settings, samples) if isinstance(e, PipelineOutput))
    return [g.image for g in output.images]


def _upsampler_rows(
    pipeline: GlidePipeline, c: ModelConfig, examples: Batch, config: TrainConfig
) -> list[list[Image.Image]]:
    """Rows: the low-res input (nearest-neighbour enlarged), the sample, the original."""
    assert examples.low_res is not None
    settings = BatchSettings(
        size=c.image_size,
        upsample_respacing=config.sample_steps,
        upsample_sampler="ddim",
        diffusion_steps=c.diffusion_steps,
    )
    samples = [Sample(prompt=p, seed=i) for i, p in enumerate(examples.captions)]
    upsampled = pipeline.upsample_images(examples.low_res, samples, settings)
    size = (c.image_size, c.image_size)
    inputs = [im.resize(size, Image.Resampling.NEAREST) for im in images.to_pil(examples.low_res)]
    return [inputs, upsampled, images.to_pil(examples.images)]
