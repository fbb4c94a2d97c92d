"""How near each sampler lands to the converged picture per model evaluation, and what it costs.

    python benchmarks/sampler_convergence.py                      # every part (about an hour on 2 cores)
    python benchmarks/sampler_convergence.py --parts small-base small-upsample   # a minute

Convergence: the pictures of a few prompts and seeds are compared with those of a many-step DDIM
run from the same start noise (1000 steps: the probability-flow ODE solved finely), as the mean
absolute difference of their 8-bit pixels. The ODE samplers (ddim, plms, dpm++2m) approach that
picture as their steps grow. The stochastic ones (ancestral, dpm++2m-sde) draw fresh noise on every
step and end at other pictures of the prompt, so their distance levels off: it shows how far the
noise moves a picture, not an error.

Parts: `demo-base` (the shipped demo base, 64 px, guidance 3), `small-base` and `small-upsample`
(the random-weight test models, 32 and 64 px), `demo-upsample` (the demo upsampler at 256 px from
the demo base's reference picture; its reference takes 250 DDIM steps to keep the run short),
`adherence` (the demo base's prompt adherence, `glide_api.training.evaluate.measure`, per sampler
at its recommended steps, against 100 ancestral steps) and `timing` (the wall time of a 64 px and
a 256 px demo picture per recommended setting, as a ratio to the reference setting).

Writes the figures as JSON (`--out`, default benchmarks/results/sampler_convergence.json; parts
not run keep their earlier figures) and the plot (`--plot`, default docs/sampling-convergence.png).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from glide_api.diffusion.samplers import model_evaluations, sampling_schedule
from glide_api.models.weights_source import WeightsSource
from glide_api.pipeline.glide_pipeline import GlidePipeline
from glide_api.pipeline.outputs import PipelineOutput
from glide_api.pipeline.params import BatchSettings, Sample
from glide_api.training.evaluate import measure, targets
from glide_api.training.plots import grid, line_chart

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("small-base", "small-upsample", "demo-base", "demo-upsample", "adherence", "timing")
BASE_SAMPLERS = ("ddim", "plms", "dpm++2m", "dpm++2m-sde", "ancestral")
UPSAMPLE_SAMPLERS = ("ddim", "plms", "dpm++2m")
BASE_COUNTS = (5, 8, 10, 15, 20, 30, 50, 100)
UPSAMPLE_COUNTS = (5, 10, 15, 27)
GUIDANCE = 3.0
# (sampler, base steps) per sampler for the adherence part: the reference first.
RECOMMENDED_BASE = (
    ("ancestral", "100"),
    ("ddim", "15"),
    ("plms", "20"),
    ("dpm++2m", "15"),
    ("dpm++2m", "20"),
    ("dpm++2m-sde", "20"),
)
# (label, base sampler, base steps, upsampler sampler, upsampler steps) for the timing part.
SETTINGS = (
    ("reference", "ancestral", "100", "ddim", "fast27"),
    ("fast", "dpm++2m", "15", "dpm++2m", "10"),
)


def pixels(images: Sequence[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(im.convert("RGB"), dtype=np.float64) for im in images])


def base_pictures(pipeline: GlidePipeline, samples: list[Sample], *, sampler: str, steps: str) -> np.ndarray:
    base = pipeline.base
    settings = BatchSettings(
        size=base.config.image_size,
        base_respacing=steps,
        base_sampler=sampler,
        diffusion_steps=base.config.diffusion_steps,
    )
    output = next(e for e in pipeline.stream(settings, samples) if isinstance(e, PipelineOutput))
    return pixels([g.image for g in output.images])


def upsampled_pictures(
    pipeline: GlidePipeline, low_res: torch.Tensor, samples: list[Sample], *, sampler: str, steps: str
) -> np.ndarray:
    up = pipeline.upsample
    settings = BatchSettings(
        size=up.config.image_size,
        upsample_respacing=steps,
        upsample_sampler=sampler,
        diffusion_steps=up.config.diffusion_steps,
    )
    return pixels(pipeline.upsample_images(low_res, samples, settings))


def evaluations(pipeline_model, sampler: str, steps: str) -> int:
    config = pipeline_model.config
    schedule = sampling_schedule(
        noise_schedule=config.noise_schedule,
        diffusion_steps=config.diffusion_steps,
        respacing=steps,
        sampler=sampler,
    )
    return model_evaluations(sampler, len(schedule))


def sweep(run, model, samplers: Sequence[str], counts: Sequence[int], reference: np.ndarray) -> dict:
    """{sampler: [[evaluations, mean |Δ| in 8-bit levels], ...]} over `counts` steps each."""
    found: dict[str, list[list[float]]] = {}
    for sampler in samplers:
        found[sampler] = []
        for count in counts:
            start = time.perf_counter()
            distance = float(np.abs(run(sampler, str(count)) - reference).mean())
            n = evaluations(model, sampler, str(count))
            found[sampler].append([n, distance])
            print(
                f"  {sampler:12s} {count:4d} steps ({n:4d} evaluations): {distance:6.2f}"
                f"  [{time.perf_counter() - start:.0f} s]",
                flush=True,
            )
    return found


def convergence_of_base(pipeline: GlidePipeline, samples: list[Sample], reference_steps: int) -> dict:
    print(f"  reference: ddim, {reference_steps} steps", flush=True)
    reference = base_pictures(pipeline, samples, sampler="ddim", steps=str(reference_steps))

    def run(sampler: str, steps: str) -> np.ndarray:
        return base_pictures(pipeline, samples, sampler=sampler, steps=steps)

    return {
        "reference_steps": reference_steps,
        "samples": len(samples),
        "distances": sweep(run, pipeline.base, BASE_SAMPLERS, BASE_COUNTS, reference),
    }


def convergence_of_upsampler(
    pipeline: GlidePipeline, samples: list[Sample], reference_steps: int, *, base_steps: int
) -> dict:
    """The upsampler from the base's pictures (DDIM, `base_steps` steps)."""
    low = base_pictures(pipeline, samples, sampler="ddim", steps=str(base_steps))
    low_res = torch.from_numpy(low).permute(0, 3, 1, 2).float() / 127.5 - 1

    def run(sampler: str, steps: str) -> np.ndarray:
        return upsampled_pictures(pipeline, low_res, samples, sampler=sampler, steps=steps)

    print(f"  reference: ddim, {reference_steps} steps", flush=True)
    reference = run("ddim", str(reference_steps))
    found = sweep(run, pipeline.upsample, UPSAMPLE_SAMPLERS, UPSAMPLE_COUNTS, reference)
    fast27 = float(np.abs(run("ddim", "fast27") - reference).mean())
    print(f"  ddim fast27: {fast27:.2f}", flush=True)
    return {
        "reference_steps": reference_steps,
        "samples": len(samples),
        "distances": found,
        "ddim fast27": fast27,
    }


def adherence(pipeline: GlidePipeline, count: int) -> dict:
    found = {}
    for sampler, steps in RECOMMENDED_BASE:
        start = time.perf_counter()
        result = measure(
            pipeline, count=count, first_seed=0, guidance_scales=(GUIDANCE,), respacing=steps, sampler=sampler
        )[GUIDANCE]
        found[f"{sampler} {steps}"] = {
            "colour": result.colour,
            "background": result.background,
            "shape": result.shape,
            "samples": count,
        }
        print(f"  {sampler} {steps}: {result}  [{time.perf_counter() - start:.0f} s]", flush=True)
    return found


def timing(pipeline: GlidePipeline) -> dict:
    """Seconds for one picture at 64 and 256 px per setting (each run twice, the faster kept)."""
    found: dict[str, dict[str, float]] = {}
    sample = Sample(prompt=targets(1)[0].prompt, seed=0, guidance_scale=GUIDANCE)
    for label, base_sampler, base_steps, up_sampler, up_steps in SETTINGS:
        found[label] = {}
        for size in (pipeline.base.config.image_size, pipeline.upsample.config.image_size):
            settings = BatchSettings(
                size=size,
                base_sampler=base_sampler,
                base_respacing=base_steps,
                upsample_sampler=up_sampler,
                upsample_respacing=up_steps,
            )
            seconds = []
            for _ in range(2):
                start = time.perf_counter()
                for _event in pipeline.stream(settings, [sample]):
                    pass
                seconds.append(time.perf_counter() - start)
            found[label][str(size)] = min(seconds)
            print(f"  {label} {size} px: {min(seconds):.1f} s", flush=True)
    return found


def plot(results: dict, path: Path) -> None:
    panels = []
    for part, title in (
        ("demo-base", "demo base, 64 px, guidance 3"),
        ("small-base", "small test base, 32 px, guidance 3"),
        ("demo-upsample", "demo upsampler, 64 -> 256 px"),
        ("small-upsample", "small test upsampler, 32 -> 64 px"),
    ):
        if part not in results:
            continue
        found = results[part]
        series = {name: [(n, max(d, 1e-3)) for n, d in points] for name, points in found["distances"].items()}
        panels.append(
            line_chart(
                series,
                title=f"{title}: mean |pixel - {found['reference_steps']}-step DDIM| (8-bit levels)",
                x_label="model evaluations",
                size=(640, 380),
            )
        )
    rows = [panels[k : k + 2] for k in range(0, len(panels), 2)]
    if rows:
        grid(rows, gap=8).save(path, optimize=True)
        print(f"plot in {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--seeds", type=int, default=3, help="prompts (and seeds) per convergence part")
    parser.add_argument("--adherence-count", type=int, default=24, help="prompts scored per setting")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "sampler_convergence.json"
    )
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "sampling-convergence.png")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}

    def record(part: str, figures: dict) -> None:  # saved part by part: a long run keeps what it did
        results[part] = figures
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")

    samples = [
        Sample(prompt=t.prompt, seed=k, guidance_scale=GUIDANCE) for k, t in enumerate(targets(args.seeds))
    ]
    wanted = set(args.parts)

    if wanted & {"small-base", "small-upsample"}:
        sys.path.insert(0, str(ROOT / "tests"))
        from small_models import write_small_model_folders

        folders = write_small_model_folders(Path(tempfile.mkdtemp(prefix="glide-small-")))
        small = GlidePipeline.load(
            base=str(folders["small-base"]),
            upsample=str(folders["small-upsample"]),
            device="cpu",
            precision="fp32",
            batch_invariant=False,
            source=WeightsSource.from_env(offline=True),
        )
        if "small-base" in wanted:
            print("small-base", flush=True)
            record("small-base", convergence_of_base(small, samples, 1000))
        if "small-upsample" in wanted:
            print("small-upsample", flush=True)
            record("small-upsample", convergence_of_upsampler(small, samples, 1000, base_steps=100))
    if wanted & {"demo-base", "demo-upsample", "adherence", "timing"}:
        demo = GlidePipeline.load(
            base="demo-base",
            upsample="demo-upsample",
            device="cpu",
            precision="fp32",
            batch_invariant=False,
            source=WeightsSource.from_env(offline=True),
        )
        if "demo-base" in wanted:
            print("demo-base", flush=True)
            record("demo-base", convergence_of_base(demo, samples, 1000))
        if "demo-upsample" in wanted:
            print("demo-upsample", flush=True)
            record("demo-upsample", convergence_of_upsampler(demo, samples[:1], 250, base_steps=100))
        if "adherence" in wanted:
            print("adherence", flush=True)
            record("adherence", adherence(demo, args.adherence_count))
        if "timing" in wanted:
            print("timing", flush=True)
            record("timing", timing(demo))
    print(f"figures in {args.out}")
    plot(results, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
