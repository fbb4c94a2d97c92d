"""Wall time of a guided base run with a guidance interval against the same run without one.

    python benchmarks/guidance_interval.py                          # the shipped demo base, 64 px
    python benchmarks/guidance_interval.py --base MODEL_FOLDER --interval 0,0.5 --steps 20 --repeats 7

Outside the interval each sample costs one model evaluation a step instead of two. The two runs
(same prompt, seed and steps) are timed alternately, each order as often, in one process; printed:
the model rows each run evaluated (counted by a forward hook), the median and spread of each run's
time, and the ratio of the medians with the range of the per-pair ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from glide_api.model_selection import NONE, ModelSelection
from glide_api.pipeline.glide_pipeline import GlidePipeline
from glide_api.pipeline.params import GenerationRequest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=None, help="a base model folder (default: the demo's)")
    parser.add_argument("--interval", default="0,0.5", help='the guidance interval "lo,hi" to time')
    parser.add_argument("--steps", default="20", help="base respacing")
    parser.add_argument("--sampler", default="ancestral")
    parser.add_argument("--batch", type=int, default=1, help="images per run")
    parser.add_argument("--repeats", type=int, default=6, help="timed pairs (after one warm-up pair)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    selection = ModelSelection(
        model="demo" if args.base is None else "official",
        base=args.base or "base",
        upsample=NONE,
        base_inpaint=NONE,
        upsample_inpaint=NONE,
        device="cpu",
        precision="fp32",
    )
    pipeline = GlidePipeline.from_selection(selection)
    size = pipeline.default_size()
    rows: list[int] = []
    pipeline.base.network.register_forward_hook(lambda module, inputs, out: rows.append(inputs[0].shape[0]))

    def run(interval: str) -> tuple[float, int]:
        request = GenerationRequest.create(
            "a red fox in the snow",
            size=size,
            seed=1,
            batch_size=args.batch,
            base_respacing=args.steps,
            base_sampler=args.sampler,
            guidance_interval=interval,
        )
        rows.clear()
        start = time.perf_counter()
        pipeline.generate(request)
        return time.perf_counter() - start, sum(rows)

    runs = {"0,1": [], args.interval: []}
    evaluated = {}
    for pair in range(args.repeats + 1):
        order = list(runs) if pair % 2 == 0 else list(runs)[::-1]
        for interval in order:
            seconds, evaluated[interval] = run(interval)
            if pair:  # the first pair warms up
                runs[interval].append(seconds)
    whole, part = runs["0,1"], runs[args.interval]
    print(
        f"{pipeline.base.name}, {size} px, {args.steps} {args.sampler} steps, batch {args.batch}, "
        f"{torch.get_num_threads()} threads, {args.repeats} alternated pairs"
    )
    for interval, times in runs.items():
        median = statistics.median(times)
        print(
            f"  interval {interval:>8}: {evaluated[interval]:4d} model rows, median {median:.3f} s "
            f"(min {min(times):.3f}, max {max(times):.3f})"
        )
    ratios = [p / w for p, w in zip(part, whole, strict=True)]
    rows_ratio = evaluated[args.interval] / evaluated["0,1"]
    print(
        f"  time ratio {statistics.median(part) / statistics.median(whole):.3f} "
        f"(per pair {min(ratios):.3f}-{max(ratios):.3f}); rows ratio {rows_ratio:.3f}"
    )


if __name__ == "__main__":
    main()
