"""``glide-api generate``, ``inpaint`` and ``img2img``; `model_options`, shared with ``serve``."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from glide_api.cli.flags import field_flag, option_flag
from glide_api.cli.weights import cache_options
from glide_api.errors import PipelineError, WeightsNotFound
from glide_api.model_selection import TASK_CAPABILITY, ModelSelection, demo_advice
from glide_api.options import GENERATION_OPTIONS, IMG2IMG_OPTIONS, OPTIONS, with_preset

if TYPE_CHECKING:
    from glide_api.pipeline.glide_pipeline import GlidePipeline
    from glide_api.pipeline.outputs import PipelineOutput
    from glide_api.pipeline.params import GenerationRequest


def model_options(*, from_config: bool = False) -> argparse.ArgumentParser:
    """Which models to load and where they run (`ModelSelection`): shared by generate, inpaint and
    serve. With `from_config` (serve) every default is None, so unset flags leave the environment
    and the config file in charge."""
    parent = argparse.ArgumentParser(add_help=False, parents=[cache_options()])
    group = parent.add_argument_group("models")
    for f in dataclasses.fields(ModelSelection):
        if f.name != "cache_dir":  # from cache_options(), shared with the cache commands
            field_flag(group, f, use_default=not from_config)
    return parent


def _sampling_options(*, img2img: bool = False) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("sampling")
    for option in GENERATION_OPTIONS + (IMG2IMG_OPTIONS if img2img else ()):
        option_flag(group, option)
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


def add_img2img(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "img2img",
        parents=[model_options(), _sampling_options(img2img=True)],
        help="redraw a picture from a prompt (image-to-image)",
        description="Start from a picture instead of pure noise: it is noised to --strength (0: "
        "kept as it is, 1: pure noise, as generate) and sampled from there with the prompt, by the "
        "text-to-image models. A non-square picture is centre-cropped to a square. At sizes above "
        "the base model's, every upsampler pass starts from the picture at its size as well.",
    )
    p.add_argument("image", type=Path, help="the picture to start from (PNG, JPEG, …)")
    p.add_argument("prompt", help="what the new picture shows")
    p.set_defaults(handler=run_generate, task="img2img")


def run_generate(args: argparse.Namespace) -> int:
    from glide_api.pipeline.glide_pipeline import GlidePipeline
    from glide_api.pipeline.params import GenerationRequest

    image = args.image.read_bytes() if args.task in ("inpaint", "img2img") else None
    mask = Path(args.mask).read_bytes() if args.task == "inpaint" and args.mask != "-" else None
    names = {f.name for f in dataclasses.fields(ModelSelection)}
    selection = ModelSelection(
        **{name: getattr(args, name) for name in names} | {"cache_dir": args.cache_dir}
    )
    capability = TASK_CAPABILITY[args.task]
    try:
        pipeline = GlidePipeline.from_selection(selection, task=capability)
    except WeightsNotFound as e:
        raise _what_is_missing(selection, capability, e) from e
    given = {o.name: getattr(args, o.name, None) for o in OPTIONS.values() if o.name != "preset"}
    chosen = {OPTIONS[name].field: value for name, value in with_preset(args.preset, given).items()}
    size = chosen.pop("size", None) or pipeline.default_size(args.task)
    request = GenerationRequest.create(
        args.prompt, size=size, task=args.task, image=image, mask=mask, **chosen
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


def _what_is_missing(selection: ModelSelection, task: str, error: WeightsNotFound) -> WeightsNotFound:
    """`error` restated for everything `task` needs, with the one command that fetches it all and,
    where the demo can do the task, that it works offline."""
    from glide_api.models.official_files import missing_weights
    from glide_api.models.weights_source import WeightsSource

    source = WeightsSource.from_env(offline=selection.offline, cache=selection.cache_dir)
    missing = missing_weights(selection.task_specs(task).values(), source=source)
    if not missing.files:
        return error
    advice = demo_advice(task, command="generate") if missing.command else None
    return WeightsNotFound(missing.message(error) + (f"; or: {advice}" if advice else ""))


def _run_with_progress(pipeline: GlidePipeline, request: GenerationRequest, *, show: bool) -> PipelineOutput:
    """Drive the pipeline with one progress bar per sampling stage."""
    from tqdm import tqdm

    from glide_api.pipeline.outputs import PipelineOutput

    bar, stage = None, None
    for event in pipeline.stream(request.settings, request.samples()):
        at = None if isinstance(event, PipelineOutput) else event.progress
        if bar is not None and (at is None or at.stage != stage):
            bar.close()
        if at is None:
            return event
        if at.stage != stage:
            stage = at.stage
            bar = tqdm(total=at.total, desc=stage, unit="step", disable=not show)
        bar.update(1)
    raise PipelineError("the pipeline ended without an output")  # pragma: no cover


def _output_paths(out: Path | None, prompt: str, count: int) -> list[Path]:
    """FILE.png for one image, FILE-1.png … for several; without --out, a name from the prompt."""
    if out is None:
        words = "-".join("".join(ch for ch in word if ch.isalnum()) for word in prompt.lower().split()[:6])
        out = Path(f"{words.strip('-') or 'glide'}.png")
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i}{out.suffix or '.png'}") for i in range(1, count + 1)]
