"""The ``glide-api`` command line. It parses, calls the library, and reports; no logic of its own.

Each subcommand is one ``add_<name>(subparsers)`` function that builds its parser and sets
``handler`` to a function ``(args) -> exit status``; `SUBCOMMANDS` lists them. To add one (serve,
generate, inpaint, train), write such a function and append it there.

Errors the user can act on (`GlideError`, `ValueError`, `OSError`) print one line to stderr and
exit 1, without a traceback (``-v`` shows the library's log lines).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from glide_api.diffusion.samplers import SAMPLERS
from glide_api.errors import GlideError
from glide_api.models import hub
from glide_api.models.download import human_size
from glide_api.pipeline.loading import PRECISION_SETTINGS
from glide_api.pipeline.params import (
    DEFAULT_BASE_RESPACING,
    DEFAULT_GUIDANCE_SCALE,
    DEFAULT_UPSAMPLE_RESPACING,
    DEFAULT_UPSAMPLE_TEMP,
)

if TYPE_CHECKING:
    from glide_api.pipeline.text2im import GlidePipeline

Handler = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with `argv` (default: ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors: argparse has printed already
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    _configure_logging(args.verbose)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("glide-api: interrupted (an unfinished download resumes when run again)", file=sys.stderr)
        return 130
    except (GlideError, ValueError, OSError) as e:
        return _error(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)


def _error(message: str) -> int:
    """Report a failure the user can act on as one line on stderr; the exit status is 1."""
    print(f"glide-api: error: {message}", file=sys.stderr)
    return 1


def build_parser() -> argparse.ArgumentParser:
    """The full parser: global options plus every subcommand in `SUBCOMMANDS`."""
    parser = argparse.ArgumentParser(prog="glide-api", description="Self-hosted GLIDE text-to-image service.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-v: info, -vv: debug)")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("glide-api")
    except importlib.metadata.PackageNotFoundError:  # run from a source checkout
        import glide_api

        return getattr(glide_api, "__version__", "(version unknown)")


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s glide-api %(levelname)s %(name)s: %(message)s")


def _cache_options() -> argparse.ArgumentParser:
    """Options shared by the commands that use the weights cache."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="the weights cache (default: $GLIDE_API_CACHE, else the user cache "
        f"folder, here {str(hub.cache_dir()).replace('%', '%%')})",
    )
    return parent


# ---- download ----------------------------------------------------------------------------------

_GROUPS = {"all": hub.CHECKPOINTS, "tokenizer": hub.TOKENIZER_FILES}
_DEFAULT_DOWNLOADS = ("base", "upsample")


def add_download(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "download",
        parents=[_cache_options()],
        help="fetch official checkpoints and the tokenizer into the cache",
        description="Download official files into the cache (resuming unfinished downloads) and "
        "convert checkpoints to safetensors. The GPT-2 tokenizer files always come "
        "too. Names: " + ", ".join(hub.REGISTRY) + "; 'all' for the four diffusion "
        "checkpoints; 'tokenizer' for only the tokenizer.",
    )
    p.add_argument(
        "names", nargs="*", metavar="NAME", help=f"what to fetch (default: {' '.join(_DEFAULT_DOWNLOADS)})"
    )
    p.add_argument(
        "--base-url",
        metavar="URL",
        help="a mirror holding the files under their plain names "
        "(default: $GLIDE_API_BASE_URL, else OpenAI's servers)",
    )
    p.add_argument(
        "--no-convert",
        action="store_true",
        help="keep only the .pt files (they are converted on first use instead)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(handler=run_download)


def run_download(args: argparse.Namespace) -> int:
    names = _expand_names(args.names or _DEFAULT_DOWNLOADS)
    if hub.offline_env() and any(not _is_cached(n, args.cache_dir) for n in names):
        return _error("downloads are off because GLIDE_API_OFFLINE is set; unset it to download")
    options = {"cache": args.cache_dir, "base_url": args.base_url, "progress": not args.no_progress}
    # Running commentary only for a person at a terminal; scripts get the summary on stdout.
    chatty = not args.no_progress and sys.stderr.isatty()
    for name in names:
        entry = hub.REGISTRY[name]
        convert = entry.preset is not None and not args.no_convert
        if chatty and not _is_cached(name, args.cache_dir):
            then = ", then converting it to safetensors" if convert else ""
            print(f"{name}: downloading {entry.filename}{then}", file=sys.stderr)
        if convert:
            hub.fetch_checkpoint(name, **options)
        else:
            hub.fetch_file(name, **options)
    cached = {c.name: c for c in hub.cached_models(cache=args.cache_dir)}
    for name in names:
        _print_cached(cached[name])
    print(f"cache: {args.cache_dir or hub.cache_dir()}")
    return 0


def _is_cached(name: str, cache: Path | None) -> bool:
    return (Path(cache or hub.cache_dir()) / hub.REGISTRY[name].filename).is_file()


def _expand_names(requested: Iterable[str]) -> list[str]:
    """Registry names in download order: tokenizer first (small), then as requested, no repeats."""
    names = list(hub.TOKENIZER_FILES)
    for name in requested:
        expanded = _GROUPS.get(name, (name,))
        for n in expanded:
            if n not in hub.REGISTRY:
                raise ValueError(
                    f"unknown name {name!r}; expected one of {', '.join([*hub.REGISTRY, *_GROUPS])}"
                )
            if n not in names:
                names.append(n)
    return names


def _print_cached(c: hub.CachedFile) -> None:
    where = c.path or c.converted
    line = f"{c.name:<18} {human_size(c.size):>9}  {where}"
    if c.path is not None and c.converted is not None:
        line += f"\n{'':<18} {'':>9}  {c.converted} (converted)"
    print(line)


# ---- models ------------------------------------------------------------------------------------


def add_models(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "models",
        parents=[_cache_options()],
        help="list what is in the weights cache",
        description="List the official files in the cache: size, whether converted to "
        "safetensors, and the start of the recorded sha256.",
    )
    p.set_defaults(handler=run_models)


def run_models(args: argparse.Namespace) -> int:
    folder = args.cache_dir or hub.cache_dir()
    cached = hub.cached_models(cache=folder)
    print(f"cache: {folder}")
    if not cached:
        print("Nothing is cached yet. Fetch the models with: glide-api download")
        return 0
    print(f"{'NAME':<18} {'SIZE':>9}  {'CONVERTED':<9}  SHA256")
    for c in cached:
        if c.partial:
            converted, digest = "-", "(partial download: run glide-api download to resume)"
        else:
            is_checkpoint = hub.REGISTRY[c.name].converted_name is not None
            converted = ("yes" if c.converted else "no") if is_checkpoint else "-"
            digest = c.sha256[:16] if c.sha256 else "(not recorded yet)"
        print(f"{c.name:<18} {human_size(c.size):>9}  {converted:<9}  {digest}")
    missing = [n for n in hub.CHECKPOINTS if n not in {c.name for c in cached}]
    if missing:
        print(f"not cached: {', '.join(missing)} (glide-api download NAME)")
    return 0


# ---- generate, inpaint -------------------------------------------------------------------------


def model_options(*, from_config: bool = False) -> argparse.ArgumentParser:
    """Which models to load and where they run: shared by generate, inpaint and serve.

    With `from_config` (serve) every default is None, so unset flags leave the environment and the
    config file in charge.
    """

    def default(value: object) -> object:
        return None if from_config else value

    parent = argparse.ArgumentParser(add_help=False, parents=[_cache_options()])
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
    from glide_api.pipeline.text2im import GlidePipeline

    inpaint = args.task == "inpaint"
    image = args.image.read_bytes() if inpaint else None
    mask = Path(args.mask).read_bytes() if inpaint and args.mask != "-" else None
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
    if inpaint and chosen["base_inpaint"] is None:
        raise ValueError("inpainting needs an inpainting base model (the demo models have none)")
    models = (
        {
            "base": None,
            "upsample": None,
            "base_inpaint": chosen["base_inpaint"],
            "upsample_inpaint": chosen["upsample_inpaint"],
        }
        if inpaint
        else {"base": chosen["base"], "upsample": chosen["upsample"]}
    )
    pipeline = GlidePipeline.load(
        **models,
        device=args.device,
        precision=args.precision,
        offline=args.offline or hub.offline_env(),
        batch_invariant=args.batch_invariant,
        cache=args.cache_dir,
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


def _run_with_progress(pipeline, request, *, show: bool):
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


# ---- serve -------------------------------------------------------------------------------------

_MODEL_FLAGS = {
    "model",
    "base",
    "upsample",
    "base_inpaint",
    "upsample_inpaint",
    "device",
    "precision",
    "offline",
    "cache_dir",
    "batch_invariant",
}


def add_serve(subparsers: argparse._SubParsersAction) -> None:
    from glide_api.config import ServiceConfig

    p = subparsers.add_parser(
        "serve",
        parents=[model_options(from_config=True)],
        help="run the web service (UI and APIs)",
        description="Serve the web UI and the APIs. Settings come from defaults, then the config file "
        "(--config or GLIDE_API_CONFIG), then GLIDE_API_* environment variables, then these "
        "flags; docs/configuration.md lists them all.",
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="a TOML or JSON file of settings")
    p.add_argument(
        "--dev", action="store_true", help="Flask's development server instead of gunicorn (auto-reload off)"
    )
    group = p.add_argument_group("service settings")
    for f in dataclasses.fields(ServiceConfig):
        if f.name in _MODEL_FLAGS:
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            group.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f.metadata["help"],
            )
        else:
            group.add_argument(
                flag,
                dest=f.name,
                default=None,
                metavar="VALUE",
                help=f"{f.metadata['help']} (default: {f.default or '—'})",
            )
    p.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from glide_api.config import ServiceConfig

    names = {f.name for f in dataclasses.fields(ServiceConfig)}
    overrides = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    if args.cache_dir is not None:
        overrides["cache_dir"] = str(args.cache_dir)
    config = ServiceConfig.load(file=args.config, overrides=overrides)
    logging.getLogger().setLevel(config.log_level.upper())
    logging.getLogger("glide_api").setLevel(config.log_level.upper())
    if args.dev:
        from glide_api.server import create_app

        create_app(config).run(host=config.host, port=config.port, threaded=True, use_reloader=False)
        return 0
    from glide_api.server.production import serve

    serve(config)
    return 0


# ---- synthetic, train ---------------------------------------------------------------------------


def add_synthetic(subparsers: argparse._SubParsersAction) -> None:
    from glide_api.training.synthetic import DEFAULT_SPREAD

    p = subparsers.add_parser(
        "synthetic",
        help="write the synthetic shapes data set (images + .txt captions)",
        description="Write COUNT images of one coloured shape (circle, square, triangle, cross) on a "
        "coloured background, each with a caption such as 'a small red circle on a blue "
        "background', as NNNNN.png + NNNNN.txt (+ metadata.jsonl). Deterministic from "
        "--seed; files already there are kept.",
    )
    p.add_argument("folder", type=Path, help="where to write the data set")
    p.add_argument("--count", type=int, default=4000, help="number of images (default: 4000)")
    p.add_argument("--seed", type=int, default=0, help="data set seed (default: 0)")
    p.add_argument("--size", type=int, default=256, help="image size in pixels (default: 256)")
    p.add_argument(
        "--spread",
        type=float,
        default=DEFAULT_SPREAD,
        help="how far a shape's centre may be from the middle, as a fraction of the "
        f"image side; 0.5: anywhere it fits (default: {DEFAULT_SPREAD})",
    )
    p.set_defaults(handler=run_synthetic)


def run_synthetic(args: argparse.Namespace) -> int:
    from glide_api.training.synthetic import write_dataset

    folder = write_dataset(args.folder, count=args.count, seed=args.seed, size=args.size, spread=args.spread)
    print(f"{args.count} images with captions in {folder}")
    return 0


# TrainConfig fields settable by flags; the defaults live in TrainConfig alone.
_TRAIN_FLAGS: dict[str, tuple[type, str]] = {
    "steps": (int, "total optimiser steps"),
    "batch_size": (int, "examples per step"),
    "lr": (float, "AdamW learning rate"),
    "warmup_steps": (int, "linear learning-rate warm-up"),
    "weight_decay": (float, "AdamW weight decay"),
    "text_lr_scale": (float, "the text encoder's learning rate as a multiple of --lr"),
    "ema_rate": (float, "EMA decay, reached gradually"),
    "grad_clip": (float, "max gradient norm, 0 for none"),
    "caption_dropout": (float, "share of empty captions, for guidance"),
    "vb_lambda": (float, "weight of the variational-bound term"),
    "offset_noise": (float, "std of a flat per-channel shift added to the noise, 0 for none"),
    "crop_min": (float, "random square crops of this..1 of the short side"),
    "patch_size": (int, "upsamplers: train on random patches of this size (default: the full size)"),
    "train_size": (int, "base models: train on images of this size (default: the model's)"),
    "seed": (int, "seed of the data order, crops, noise, timesteps and initial weights"),
    "save_every": (int, "steps between checkpoints"),
    "sample_every": (int, "steps between preview grids, 0 for none"),
    "sample_count": (int, "images per preview grid"),
    "sample_steps": (str, "respacing of the preview sampler"),
    "guidance_scale": (float, "guidance scale of the base previews"),
}
# Those a resumed run may change: the output schedule, and the learning rate (a manual step decay;
# the rest would change what earlier steps meant).
_RESUME_FLAGS = (
    "steps",
    "lr",
    "save_every",
    "sample_every",
    "sample_count",
    "sample_steps",
    "guidance_scale",
    "save_dtype",
)


def add_train(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        parents=[_cache_options()],
        help="train or fine-tune a base model or an upsampler",
        description="Train a GLIDE base model or upsampler on a folder of images with same-name .txt "
        "captions: fine-tune a model (--init: an official name or a model folder) or "
        "train one from scratch (--config: demo-base, demo-upsample, an official name, or "
        "a JSON file of model options). OUT becomes a model folder (EMA weights) with "
        "training-state.pt for --resume, loss.csv, loss.png and samples/. "
        "docs/training.md explains every option.",
    )
    p.add_argument("--data", type=Path, metavar="DIR", help="images with same-name .txt captions")
    p.add_argument("--out", type=Path, metavar="DIR", help="the run's folder (a model folder)")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--init", metavar="MODEL", help="fine-tune this model: official name or folder")
    start.add_argument("--config", metavar="CONFIG", help="train from scratch: preset or JSON file")
    start.add_argument("--resume", type=Path, metavar="DIR", help="continue the run saved in DIR")
    p.add_argument(
        "--tokenizer",
        choices=("bytes", "gpt2"),
        help="from scratch: the tokenizer (default: bytes when n_vocab is 257, else gpt2)",
    )
    p.add_argument(
        "--synthetic",
        type=int,
        metavar="N",
        help="first write N synthetic shapes images into --data (default: OUT/data)",
    )
    from glide_api.training.settings import MSE_WEIGHTINGS, TrainConfig

    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    group = p.add_argument_group("training")
    for name, (kind, text) in _TRAIN_FLAGS.items():
        shown = "" if defaults[name] is None else f" (default: {defaults[name]})"
        group.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            default=None,
            help=text + shown,
            metavar={int: "N", float: "X", str: "RESPACING"}[kind],
        )
    group.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random horizontal flips (default: off, captions may say left/right)",
    )
    group.add_argument(
        "--mse-weighting",
        choices=MSE_WEIGHTINGS,
        default=None,
        help="weight of each noise level's MSE: eps (GLIDE's, default), p2 or truncated-snr "
        "(favour the noisy steps that set a picture's layout; docs/training.md)",
    )
    group.add_argument(
        "--save-dtype",
        choices=("fp32", "fp16"),
        default=None,
        help="dtype of model.safetensors (default: fp32)",
    )
    group.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, …")
    group.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "bf16"),
        help="auto: bf16 autocast on CUDA, fp32 elsewhere",
    )
    group.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    group.add_argument("--offline", action="store_true", help="never download (also GLIDE_API_OFFLINE=1)")
    group.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    import time

    import torch
    from tqdm import tqdm

    from glide_api.training import TrainConfig, Trainer
    from glide_api.training.plots import smooth
    from glide_api.training.synthetic import write_dataset
    from glide_api.training.trainer import describe_run

    if args.threads:
        torch.set_num_threads(args.threads)
    given = {
        name: getattr(args, name)
        for name in (*_TRAIN_FLAGS, "flip", "mse_weighting", "save_dtype")
        if getattr(args, name) is not None
    }
    if args.resume is not None:
        fixed = sorted(set(given) - set(_RESUME_FLAGS))
        if fixed or args.synthetic or args.init or args.config:
            raise ValueError(
                f"--resume continues a run with its own settings; only "
                f"{', '.join('--' + f.replace('_', '-') for f in _RESUME_FLAGS)} and --data "
                f"may be given (got {', '.join(fixed) or 'a new start'})"
            )
        steps = given.pop("steps", None)
        trainer = Trainer.resume(
            args.resume,
            steps=steps,
            data_dir=args.data,
            device=args.device,
            precision=args.precision,
            **given,
        )
    else:
        if args.out is None or (args.init is None and args.config is None):
            raise ValueError("give --out and one of --init (fine-tune), --config (from scratch) or --resume")
        data = args.data
        if args.synthetic:
            data = data or args.out / "data"
            print(f"writing {args.synthetic} synthetic images to {data}", file=sys.stderr)
            write_dataset(data, count=args.synthetic)
        if data is None:
            raise ValueError("give --data (a folder of images with .txt captions) or --synthetic N")
        trainer = Trainer.create(
            data_dir=data,
            out=args.out,
            config=TrainConfig(**given),
            init=args.init,
            model=args.config,
            tokenizer=args.tokenizer,
            device=args.device,
            precision=args.precision,
            offline=args.offline or hub.offline_env(),
            cache=args.cache_dir,
        )
    print(describe_run(trainer), file=sys.stderr)
    start, losses = time.perf_counter(), []
    bar = tqdm(
        total=trainer.config.steps, initial=trainer.step, desc="train", unit="step", disable=args.no_progress
    )
    with bar:
        for result in trainer.fit():
            losses.append(result.loss)
            average = smooth(losses[-200:], span=50)[-1]
            bar.set_postfix(loss=f"{average:.4f}", lr=f"{result.lr:.2g}")
            bar.update(1)
            if result.samples is not None:
                bar.write(f"step {result.step}: samples {result.samples}")
    minutes = (time.perf_counter() - start) / 60
    print(
        f"trained to step {trainer.step} in {minutes:.1f} min; loss {average:.4f} (moving average); "
        f"model folder {trainer.out}"
    )
    return 0


def add_evaluate(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        parents=[_cache_options()],
        help="measure how well a base model trained on the synthetic shapes follows prompts",
        description="Sample COUNT prompts ('a red circle on a blue background', cycling through every "
        "colour, shape and background), prompt i with seed FIRST_SEED + i, at each guidance "
        "scale, at the model's own size; read each picture back with the data set's "
        "classifier and print how often the shape colour, the background and the kind of "
        "shape are the ones asked for, next to chance. The demo's model card was measured "
        "this way.",
    )
    p.add_argument(
        "model",
        nargs="?",
        default="demo-base",
        help="a base model: folder or name (default: demo-base, the shipped demo)",
    )
    p.add_argument("--count", type=int, default=48, help="prompts per guidance scale (default: 48)")
    p.add_argument("--first-seed", type=int, default=1000, help="seed of the first prompt (default: 1000)")
    p.add_argument(
        "--guidance",
        type=float,
        nargs="+",
        default=[3.0, 0.0],
        metavar="SCALE",
        help="guidance scales to compare (default: 3 0)",
    )
    p.add_argument(
        "--steps",
        default="ddim16",
        metavar="RESPACING",
        help="sampling steps: ddimN for DDIM, N for ancestral (default: ddim16)",
    )
    p.add_argument("--grid", type=Path, metavar="PNG", help="also save the pictures, a row of each scale")
    p.add_argument(
        "--words",
        action="store_true",
        help="instead of sampling, print how far changing one word of each prompt (the "
        "background, the shape colour, the kind of shape, or a one-letter typo for "
        "scale) moves the network's prediction: which words it uses at all",
    )
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, …")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.set_defaults(handler=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    import torch

    from glide_api.pipeline.text2im import GlidePipeline
    from glide_api.training.evaluate import measure
    from glide_api.training.plots import grid

    if args.threads:
        torch.set_num_threads(args.threads)
    pipeline = GlidePipeline.load(
        base=args.model,
        upsample=None,
        device=args.device,
        precision="fp32",
        offline=True,
        batch_invariant=False,
        cache=args.cache_dir,
    )
    if args.words:
        return _print_word_influences(pipeline, args.count)
    results = measure(
        pipeline,
        count=args.count,
        first_seed=args.first_seed,
        guidance_scales=args.guidance,
        respacing=args.steps,
    )
    for scale, result in results.items():
        print(f"guidance {scale:g}: {result}")
    if args.grid is not None:
        grid([list(r.images) for r in results.values()]).save(args.grid)
        print(f"pictures in {args.grid}")
    return 0


def _print_word_influences(pipeline: GlidePipeline, count: int) -> int:
    from glide_api.training.evaluate import word_influences

    table = word_influences(pipeline, count=count)
    timesteps = list(next(iter(table.values())))
    print(
        f"how far one changed word moves the x0 prediction (RMS over the picture, mean of {count} "
        "prompts, same noise)"
    )
    print(f"{'':16}" + "".join(f"{'t=' + str(t):>8}" for t in timesteps))
    for part, moved in table.items():
        print(f"{part:16}" + "".join(f"{moved[t]:8.3f}" for t in timesteps))
    print("a word that moves it no more than the typo does is one the model ignores")
    return 0


SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    add_download,
    add_models,
    add_generate,
    add_inpaint,
    add_serve,
    add_synthetic,
    add_train,
    add_evaluate,
)

if __name__ == "__main__":
    sys.exit(main())
