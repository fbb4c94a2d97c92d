"""``glide-api synthetic``, ``train`` and ``evaluate``: the shapes data set, training, measuring."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from glide_api.cli.flags import selection_help
from glide_api.cli.weights import cache_options
from glide_api.errors import InvalidParameter
from glide_api.models.weights_source import WeightsSource
from glide_api.options import SAMPLERS
from glide_api.training.evaluate import measure
from glide_api.training.settings import SAVE_DTYPES, TRAIN_PRECISIONS, TrainConfig

if TYPE_CHECKING:
    from glide_api.pipeline.glide_pipeline import GlidePipeline


# ---- synthetic ---------------------------------------------------------------------------------


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


# ---- train -------------------------------------------------------------------------------------

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


def add_train(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        parents=[cache_options()],
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
    from glide_api.training.settings import MSE_WEIGHTINGS

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
        choices=SAVE_DTYPES,
        default=None,
        help=f"dtype of model.safetensors (default: {TrainConfig.save_dtype})",
    )
    group.add_argument("--device", default="auto", help=selection_help("device"))
    group.add_argument(
        "--precision",
        default="auto",
        choices=TRAIN_PRECISIONS,
        help="auto: bf16 autocast on CUDA, fp32 elsewhere",
    )
    group.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    group.add_argument("--offline", action="store_true", help=selection_help("offline"))
    group.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    import time

    import torch
    from tqdm import tqdm

    from glide_api.training import Trainer
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
        if args.synthetic or args.init or args.config:
            raise InvalidParameter(
                "resume: --resume continues a run; --synthetic, --init and --config start one"
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
            raise InvalidParameter(
                "give --out and one of --init (fine-tune), --config (from scratch) or --resume"
            )
        data = args.data
        if args.synthetic:
            data = data or args.out / "data"
            print(f"writing {args.synthetic} synthetic images to {data}", file=sys.stderr)
            write_dataset(data, count=args.synthetic)
        if data is None:
            raise InvalidParameter("give --data (a folder of images with .txt captions) or --synthetic N")
        trainer = Trainer.create(
            data_dir=data,
            out=args.out,
            config=TrainConfig(**given),
            init=args.init,
            model=args.config,
            tokenizer=args.tokenizer,
            device=args.device,
            precision=args.precision,
            source=WeightsSource.from_env(offline=args.offline, cache=args.cache_dir),
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


# ---- evaluate ----------------------------------------------------------------------------------


def add_evaluate(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        parents=[cache_options()],
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
    measured = {
        n: v.default for n, v in inspect.signature(measure).parameters.items() if v.default is not v.empty
    }
    p.add_argument(
        "--count",
        type=int,
        default=measured["count"],
        help=f"prompts per guidance scale (default: {measured['count']})",
    )
    p.add_argument(
        "--first-seed",
        type=int,
        default=measured["first_seed"],
        help=f"seed of the first prompt (default: {measured['first_seed']})",
    )
    p.add_argument(
        "--guidance",
        type=float,
        nargs="+",
        default=list(measured["guidance_scales"]),
        metavar="SCALE",
        help="guidance scales to compare (default: "
        + " ".join(f"{g:g}" for g in measured["guidance_scales"])
        + ")",
    )
    p.add_argument(
        "--steps",
        default=measured["respacing"],
        metavar="RESPACING",
        help=f"sampling steps: ddimN for DDIM, N for ancestral (default: {measured['respacing']})",
    )
    p.add_argument(
        "--sampler",
        choices=SAMPLERS,
        help="sample with this sampler in the --steps given (default: as --steps says)",
    )
    p.add_argument("--grid", type=Path, metavar="PNG", help="also save the pictures, a row of each scale")
    p.add_argument(
        "--words",
        action="store_true",
        help="instead of sampling, print how far changing one word of each prompt (the "
        "background, the shape colour, the kind of shape, or a one-letter typo for "
        "scale) moves the network's prediction: which words it uses at all",
    )
    p.add_argument("--device", default="auto", help=selection_help("device"))
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.set_defaults(handler=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    import torch

    from glide_api.model_selection import NONE, ModelSelection
    from glide_api.pipeline.glide_pipeline import GlidePipeline
    from glide_api.training.plots import grid

    if args.threads:
        torch.set_num_threads(args.threads)
    selection = ModelSelection(
        base=args.model,
        upsample=NONE,
        device=args.device,
        precision="fp32",
        offline=True,
        batch_invariant=False,
        cache_dir=args.cache_dir,
    )
    pipeline = GlidePipeline.from_selection(selection, task="text2im")
    if args.words:
        return _print_word_influences(pipeline, args.count)
    results = measure(
        pipeline,
        count=args.count,
        first_seed=args.first_seed,
        guidance_scales=args.guidance,
        respacing=args.steps,
        sampler=args.sampler,
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
