"""Time a full-size GLIDE forward as the sampler runs it, against the model code of a baseline revision.

    python benchmarks/forward.py                       # base and upsampler, fp32 and bf16 (+ fp16 on CUDA)
    python benchmarks/forward.py --models base --modes fp32 --repeats 7
    python benchmarks/forward.py --baseline HEAD~1     # against another revision

The sampler encodes the text once per request and reuses it at every step, so a timed call is
`network(x, t, text=...)` with the text encoded beforehand: base at batch 2 (a prompt and the empty
prompt of guidance, 64 px), upsampler at batch 1 (256 px).

The baseline is the package at a git revision (default: BASELINE, the code before the speed work of
issue 17), extracted with `git archive` into a temporary folder and imported beside this checkout as
`glide_api_baseline`. Both networks get the same random weights and inputs, and they are timed
alternately in one process (baseline, new, new, baseline, ...) after a warm-up, so that the load of
other processes on a shared machine falls on both alike: the figure is the ratio new / baseline of
each pair, given as its median and range over the repeats. Absolute seconds are medians too.

Each precision runs as its own revision's pipeline runs it: `prepare(network, precision)` from that
revision's `pipeline/loading.py`, and under bf16 autocast where that left the weights in float32 (the
baseline's bf16, which cast every weight in every forward). `rel diff` is ‖new − baseline‖ / ‖baseline‖
of the two outputs; `new vs fp32` and `base vs fp32` are each revision's error in that precision
against its own float32 output. Random weights: speed does not depend on the values.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from torch.utils.flop_counter import FlopCounterMode

from glide_api.models import glide
from glide_api.models.glide import create_model
from glide_api.pipeline import loading

BASELINE = "7a87eb3"  # main before issue 17: strided attention inputs, text keys/values every step
REPO = Path(__file__).resolve().parents[1]
SHAPES = {"base": (2, 64), "upsample": (1, 256)}  # batch, image size


def baseline_package(rev: str) -> tuple[ModuleType, ModuleType]:
    """The baseline revision's `models.glide` and `pipeline.loading` modules, imported from git."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", rev, "glide_api"],
        check=True,
        capture_output=True,
    ).stdout
    folder = Path(tempfile.mkdtemp(prefix="glide-baseline-"))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            member.name = member.name.replace("glide_api", "glide_api_baseline", 1)
            tar.extract(member, folder, filter="data")
    sys.path.insert(0, str(folder))
    return (
        importlib.import_module("glide_api_baseline.models.glide"),
        importlib.import_module("glide_api_baseline.pipeline.loading"),
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], torch.Tensor], device: torch.device) -> float:
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def inputs(name: str, device: torch.device) -> dict[str, torch.Tensor]:
    batch, size = SHAPES[name]
    g = torch.Generator().manual_seed(0)
    tensors = {
        "x": torch.randn(batch, 3, size, size, generator=g),
        "t": torch.full((batch,), 500, dtype=torch.long),
        "tokens": torch.randint(0, 50256, (batch, 128), generator=g),
        "mask": torch.arange(128).expand(batch, 128).lt(20),
    }
    if name == "upsample":
        tensors["low_res"] = torch.randn(batch, 3, size // 4, size // 4, generator=g)
    return {k: v.to(device) for k, v in tensors.items()}


def step_flops(name: str) -> int:
    """FLOPs of one forward with the text encoded beforehand (the encoding not counted)."""
    with torch.device("meta"):
        model = create_model(name)
        x = inputs(name, torch.device("meta"))
        with torch.no_grad():
            text = model.encode_text(x["tokens"], x["mask"])
            counter = FlopCounterMode(display=False)
            with counter:
                model(x["x"], x["t"], text=text, low_res=x.get("low_res"))
    return counter.get_total_flops()


def step_fn(
    network: torch.nn.Module, context: contextlib.AbstractContextManager, x: dict[str, torch.Tensor]
) -> Callable[[], torch.Tensor]:
    """One sampler step's network call, its text encoded once here."""
    extra = {"low_res": x["low_res"]} if "low_res" in x else {}
    with torch.no_grad(), context:
        text = network.encode_text(x["tokens"], x["mask"])

    def run() -> torch.Tensor:
        with torch.no_grad(), context:
            return network(x["x"], x["t"], text=text, **extra)

    return run


def prepared(
    code: tuple[ModuleType, ModuleType],
    weights: dict[str, torch.Tensor],
    name: str,
    mode: str,
    device: torch.device,
) -> tuple[torch.nn.Module, contextlib.AbstractContextManager]:
    """A network of one revision's code (`models.glide`, `pipeline.loading`), prepared as it samples."""
    models, load = code
    network = load.prepare(models.create_model(name, weights), device=device, precision=mode)
    casts_per_forward = mode == "bf16" and network.dtype == torch.float32
    context = (
        torch.autocast(device.type, dtype=torch.bfloat16) if casts_per_forward else contextlib.nullcontext()
    )
    return network, context


def random_weights(name: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    network = create_model(name)
    for p in network.parameters():  # small random weights keep activations finite
        torch.nn.init.normal_(p, std=0.02)
    return {k: v.detach() for k, v in network.state_dict().items()}


def benchmark(
    name: str,
    modes: list[str],
    device: torch.device,
    *,
    repeats: int,
    baseline: tuple[ModuleType, ModuleType],
) -> None:
    """Print one row per precision mode for one model."""
    code = {"base": baseline, "new": (glide, loading)}
    weights = random_weights(name)
    x = inputs(name, device)
    flops = step_flops(name)
    fp32: dict[str, torch.Tensor] = {}
    for mode in ["fp32", *(m for m in modes if m != "fp32")]:
        runs = {}
        for side in code:
            runs[side] = step_fn(*prepared(code[side], weights, name, mode, device), x)
        outputs = {side: run() for side, run in runs.items()}  # also the warm-up
        for side, out in outputs.items():
            fp32.setdefault(side, out)
        if mode not in modes:
            continue
        times: dict[str, list[float]] = {"base": [], "new": []}
        for r in range(repeats):
            for side in ("base", "new") if r % 2 == 0 else ("new", "base"):
                times[side].append(timed(runs[side], device))
        ratios = [n / b for n, b in zip(times["new"], times["base"], strict=True)]
        print(
            f"{name:9} {mode:5} {SHAPES[name][0]:>5} {flops / 1e9:>7.1f} "
            f"{statistics.median(times['base']):>9.3f}s {statistics.median(times['new']):>8.3f}s "
            f"{statistics.median(ratios):>7.3f} [{min(ratios):.3f}–{max(ratios):.3f}] "
            f"{relative_error(outputs['new'], outputs['base']):>9.1e} "
            f"{relative_error(outputs['new'], fp32['new']):>11.1e} "
            f"{relative_error(outputs['base'], fp32['base']):>12.1e}"
        )
        del runs, outputs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="base,upsample")
    parser.add_argument("--modes", default="fp32,bf16,fp16", help="fp16 runs on CUDA only")
    parser.add_argument("--repeats", type=int, default=5, help="timed pairs per row (default 5)")
    parser.add_argument(
        "--baseline", default=BASELINE, help=f"git revision to compare with (default {BASELINE})"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    modes = [m for m in args.modes.split(",") if m != "fp16" or device.type == "cuda"]
    rev = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", args.baseline],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()

    print(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"baseline {rev}, {args.repeats} alternated pairs per row, text encoded once"
    )
    print(
        f"{'model':9} {'mode':5} {'batch':>5} {'GFLOP':>7} {'baseline':>10} {'new':>9} "
        f"{'new/baseline [range]':>21} {'rel diff':>9} {'new vs fp32':>11} {'base vs fp32':>12}"
    )
    baseline = baseline_package(rev)
    for name in args.models.split(","):
        benchmark(name, modes, device, repeats=args.repeats, baseline=baseline)


if __name__ == "__main__":
    main()
