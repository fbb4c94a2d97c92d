"""``glide-api generate`` and ``glide-api inpaint``; `model_options`, shared with ``serve``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from glide_api.cli.weights import cache_options
from glide_api.diffusion.samplers import SAMPLERS
from glide_api.models.weights_source import WeightsSource
from glide_api.options import GUIDANCE_SCALE, STEPS, UPSAMPLE_STEPS, UPSAMPLE_TEMP
from glide_api.pipeline.loading import PRECISION_SETTINGS

DEFAULT_BASE_RESPACING = STEPS.default
DEFAULT_GUIDANCE_SCALE = GUIDANCE_SCALE.default
DEFAULT_UPSAMPLE_RESPACING = UPSAMPLE_STEPS.default
DEFAULT_UPSAMPLE_TEMP = UPSAMPLE_TEMP.default

if TYPE_CHECKING:
    from glide_api.pipeline.outputs import PipelineOutput
    from glide_api.pipeline.params import GenerationRequest
    from glide_api.pipeline.glide_pipeline import GlidePipeline


def model_options(*, from_config: bool = False) -> argparse.ArgumentParser:
    """Which models to load and where they run: shared by generate, inpaint and serve.

    With `from_config` (serve) every default is None, so unset flags leave the environment and the
    config file in charge.
    """

    def default(value: object) -> object:
        return None if from_config else value

    parent = argparse.ArgumentParser(add_help=False, parents=[cache_options()])
    group = parent.add_argument_group("models")
    group.add_argument(
        "--model",
        default=default("official"),
        choices=("official", "demo"),
        help="official: the GLIDE checkpoints (downloaded once); demo: the small shipped "
        "shapes models, offline, no inpainting (replaces the model flags not given)",
    )
    group.add_argument(
        "--base",
        default=default("base"),
        metavar="MODEL",
        help="base model: an official name or a model folder (default: base)",
    )
    group.add_argument(
        "--upsample",
        default=default("upsample"),
        metavar="MODEL",
        help="upsampler: an official name or a model folder (default: upsample)",
    )
    group.add_argument(
        "--base-inpaint",
        default=default("base-inpaint"),
        metavar="MODEL",
        help="inpainting base model (default: base-inpaint)",
    )
    group.add_argument(
        "--upsample-inpaint",
        default=default("upsample-inpaint"),
        metavar="MODEL",
        help="inpainting upsampler (default: upsample-inpaint)",
    )
    group.add_argument(
        "--device", default=default("auto"), help="auto (cuda if available), cpu, cuda, cuda:1, …"
    )
    group.add_argument(
        "--precision",
        default=default("auto"),
        choices=PRECISION_SETTINGS,
        help="auto: fp16 on CUDA (the reference's mixed precision), fp32 on CPU",
    )
    group.add_argument(
        "--offline",
        action="store_true",
        default=default(False),
        help="never download; fail if a model is not cached (also GLIDE_API_OFFLINE=1)",
    )
    group.add_argument(
        "--batch-invariant",
        action=argparse.BooleanOptionalAction,
        default=default(True),
        help="run each sample's rows alone so its image never depends on batch-mates "
        "(--no-batch-invariant: one tensor per batch, faster on GPUs)",
    )
    return parent


def _sampling_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("sampling")
    group.add_argument(
        "--size",
        type=int,
        default=None,
        help="output size in pixels (default: the upsampler's, 256 for the official models)",
    )
    group.add_argument("--batch-size", type=int, default=1, help="images to make (default: 1)")
    group.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the first image; image i uses seed+i (default: random, printed)",
    )
    group.add_argument(
        "--guidance-scale",
        type=float,
        default=DEFAULT_GUIDANCE_SCALE,
        help=f"classifier-free guidance scale (default: {DEFAULT_GUIDANCE_SCALE})",
    )
    group.add_argument(
        "--steps",
        default=None,
        metavar="RESPACING",
        help=f"base steps: a count or respacing such as 50, fast27, ddim25 "
        f"(default: {DEFAULT_BASE_RESPACING})",
    )
    group.add_argument(
        "--upsample-steps",
        default=None,
        metavar="RESPACING",
        help=f"upsampler steps (default: {DEFAULT_UPSAMPLE_RESPACING})",
    )
    group.add_argument("--sampler", choices=SAMPLERS, default="ancestral", help="base sampler")
    group.add_argument(
        "--upsample-sampler",
        choices=SAMPLERS,
        default=None,
        help="upsampler sampler (default: ddim; ancestral for inpainting)",
    )
    group.add_argument("--eta", type=float, default=0.0, help="DDIM eta (default: 0)")
    group.add_argument(
        "--upsample-temp",
        type=float,
        default=DEFAULT_UPSAMPLE_TEMP,
        help=f"scale of the upsampler's start noise (default: {DEFAULT_UPSAMPLE_TEMP})",
    )
    group.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE.png",
        help="where to write the image; with several images FILE-1.png, FILE-2.png, … "
        "(default: a name made from the prompt's first words)",
    )
    group.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parent


def add_generate(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate",
        parents=[model_options(), _sampling_options()],
        help="make images from a prompt",
        description="Generate images from a text prompt and write them as PNG files whose text "
        "chunk holds every parameter (so each image can be reproduced).",
    )
    p.add_argument("prompt", help='what to draw, e.g. "a corgi in a field"')
    p.set_defaults(handler=run_generate, task="text2im")


def add_inpaint(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "inpaint",
        parents=[model_options(), _sampling_options()],
        help="repaint the masked part of an image from a prompt",
        description="Fill in part of an image. The mask is white where the image is kept and black "
        "where the model paints (or transparent, for a mask with an alpha channel). Pass "
        "'-' as MASK to use IMAGE's own transparency as the mask. A non-square image is "
        "centre-cropped to a square.",
    )
    p.add_argument("image", type=Path, help="the image to edit (PNG, JPEG, …)")
    p.add_argument("mask", help="the mask image, or - to use the image's alpha channel")
    p.add_argument("prompt", help="what to paint in the masked area")
    p.set_defaults(handler=run_generate, task="inpaint")


def run_generate(args: argparse.Namespace) -> int:
    from glide_api.pipeline.params import GenerationRequest
    from glide_api.pipeline.glide_pipeline import GlidePipeline

    inpaint = args.task == "inpaint"
    image = args.image.read_bytes() if inpaint else None
    mask = Path(args.mask).read_bytes() if inpaint and args.mask != "-" else None
    pipeline = GlidePipeline.load(
        **_models_to_load(args),
        device=args.device,
        precision=args.precision,
        batch_invariant=args.batch_invariant,
        source=WeightsSource.from_env(offline=args.offline, cache=args.cache_dir),
    )
    steps = {
        k: v
        for k, v in (
            ("base_respacing", args.steps),
            ("upsample_respacing", args.upsample_steps),
            ("upsample_sampler", args.upsample_sampler),
        )
        if v is not None
    }
    request = GenerationRequest.create(
        args.prompt,
        size=args.size or pipeline.default_size(args.task),
        batch_size=args.batch_size,
        seed=args.seed,
        guidance_scale=args.guidance_scale,
        task=args.task,
        base_sampler=args.sampler,
        eta=args.eta,
        upsample_temp=args.upsample_temp,
        image=image,
        mask=mask,
        **steps,
    )
    output = _run_with_progress(pipeline, request, show=not args.no_progress)
    for path, generated in zip(
        _output_paths(args.out, args.prompt, len(output.images)), output.images, strict=True
    ):
        path.write_bytes(generated.png)
        print(f"{path}  seed {generated.seed}")
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in output.stage_seconds.items())
    print(f"{' -> '.join(output.chain)} in {output.total_seconds:.1f} s ({timings})")
    return 0


def _models_to_load(args: argparse.Namespace) -> dict[str, str | None]:
    """The `GlidePipeline.load` model arguments (role -> model, None: not loaded) for the task.

    ``--model demo`` replaces the model flags not given (`model_choice`); "none" drops a role.
    """
    from glide_api.config import model_choice

    chosen = model_choice(
        args.model,
        {
            "base": args.base,
            "upsample": args.upsample,
            "base_inpaint": args.base_inpaint,
            "upsample_inpaint": args.upsample_inpaint,
        },
    )
    chosen = {role: None if spec is None or spec.lower() == "none" else spec for role, spec in chosen.items()}
    if args.task != "inpaint":
        return {"base": chosen["base"], "upsample": chosen["upsample"]}
    if chosen["base_inpaint"] is None:
        raise ValueError("inpainting needs an inpainting base model (the demo models have none)")
    return {
        "base": None,
        "upsample": None,
        "base_inpaint": chosen["base_inpaint"],
        "upsample_inpaint": chosen["upsample_inpaint"],
    }


def _run_with_progress(pipeline: GlidePipeline, request: GenerationRequest, *, show: bool) -> PipelineOutput:
    """Drive the pipeline with one progress bar per sampling stage."""
    from tqdm import tqdm

    from glide_api.pipeline.outputs import PipelineOutput

    bar, stage = None, None
    for event in pipeline.stream(request.settings, request.samples()):
        if bar is not None and (isinstance(event, PipelineOutput) or event.stage != stage):
            bar.close()
        if isinstance(event, PipelineOutput):
            return event
        if event.stage != stage:
            stage = event.stage
            bar = tqdm(total=event.total, desc=stage, unit="step", disable=not show)
        bar.update(1)
    raise RuntimeError("the pipeline ended without an output")  # pragma: no cover


def _output_paths(out: Path | None, prompt: str, count: int) -> list[Path]:
    """FILE.png for one image, FILE-1.png … for several; without --out, a name from the prompt."""
    if out is None:
        words = "-".join("".join(ch for ch in word if ch.isalnum()) for word in prompt.lower().split()[:6])
        out = Path(f"{words.strip('-') or 'glide'}.png")
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i}{out.suffix or '.png'}") for i in range(1, count + 1)]
