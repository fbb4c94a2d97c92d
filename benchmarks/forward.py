"""Time one full-size GLIDE forward pass per precision mode, as a fraction of matmul speed.

    python benchmarks/forward.py                      # base (batch 2, 64 px) and upsampler (batch 1, 256 px)
    python benchmarks/forward.py --models base --modes fp32 --repeats 3

Absolute times on a shared machine swing with load, so each row is reported next to the FLOP/s of a
large square matmul in the same dtype, measured in the same run: "of matmul" is the comparable
figure. FLOPs are counted by torch's FlopCounterMode for the complete forward (text encoder
included); "text reused" times the same forward with the text embedding computed beforehand, as the
sampler does (once per request), and reports the same full-forward FLOPs over that time.

Random weights: speed does not depend on the values.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from glide_api.models.glide import autocast, create_model

SHAPES = {"base": (2, 64), "upsample": (1, 256)}  # batch, image size
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_time(fn: Callable[[], object], *, repeats: int, device: torch.device) -> float:
    """Best wall time of `repeats` calls after one warm-up call (the least disturbed by other load)."""
    fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_flops_per_second(dtype: torch.dtype, device: torch.device, *, size: int, repeats: int) -> float:
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    calls = 10 if device.type == "cpu" else 200

    def run() -> None:
        for _ in range(calls):
            torch.mm(a, b)

    seconds = best_time(run, repeats=repeats, device=device)
    return 2 * size**3 * calls / seconds


def inputs(name: str, device: torch.device) -> tuple[torch.Tensor, ...]:
    batch, size = SHAPES[name]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g).to(device)
    t = torch.full((batch,), 500, dtype=torch.long, device=device)
    tokens = torch.randint(0, 50256, (batch, 128), generator=g).to(device)
    mask = torch.arange(128).expand(batch, 128).lt(20).to(device)
    low_res = torch.randn(batch, 3, size // 4, size // 4, generator=g).to(device)
    return x, t, tokens, mask, low_res


def count_flops(name: str) -> int:
    with torch.device("meta"):
        model = create_model(name)
        x, t, tokens, mask, low_res = inputs(name, torch.device("meta"))
        counter = FlopCounterMode(display=False)
        with counter:
            model(x, t, tokens=tokens, mask=mask, low_res=low_res if model.config.super_res else None)
    return counter.get_total_flops()


def benchmark(name: str, modes: list[str], device: torch.device, *, repeats: int, matmul_size: int) -> None:
    """Print one row per precision mode for one model."""
    flops = count_flops(name)
    model = create_model(name).to(device)
    for p in model.parameters():  # random weights, scaled so activations stay finite
        torch.nn.init.normal_(p, std=0.02)
    x, t, tokens, mask, low_res = inputs(name, device)
    extra = {"low_res": low_res} if model.config.super_res else {}
    for mode in modes:
        if mode == "fp16":
            model.convert_to_fp16()
        with torch.no_grad(), autocast(mode, device):
            full = best_time(
                lambda: model(x, t, tokens=tokens, mask=mask, **extra), repeats=repeats, device=device
            )
            text = model.encode_text(tokens, mask)
            reused = best_time(
                lambda: model(x, t, text=text, **extra),  # noqa: B023
                repeats=repeats,
                device=device,
            )
        if mode == "fp16":
            model.convert_to_fp32()
        matmul = matmul_flops_per_second(DTYPES[mode], device, size=matmul_size, repeats=repeats)
        achieved = flops / full
        print(
            f"{name:9} {mode:5} {x.shape[0]:>5} {flops / 1e9:>8.1f} {full:>14.3f}s "
            f"{reused:>11.3f}s {achieved / 1e9:>9.1f} {matmul / 1e9:>15.1f} "
            f"{achieved / matmul:>10.0%} {flops / reused / matmul:>18.0%}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="base,upsample")
    parser.add_argument("--modes", default="fp32,bf16,fp16", help="fp16 runs on CUDA only")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    modes = [m for m in args.modes.split(",") if m != "fp16" or device.type == "cuda"]

    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(
        f"{'model':9} {'mode':5} {'batch':>5} {'GFLOP':>8} {'text each call':>15} "
        f"{'text reused':>12} {'GFLOP/s':>9} {'matmul GFLOP/s':>15} {'of matmul':>10} "
        f"{'reused, of matmul':>18}"
    )
    for name in args.models.split(","):
        benchmark(name, modes, device, repeats=args.repeats, matmul_size=args.matmul_size)


if __name__ == "__main__":
    main()
