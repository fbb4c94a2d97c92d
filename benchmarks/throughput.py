"""Engine throughput: images per minute at 64 px for N queued one-image requests, batching off and on.

    python benchmarks/throughput.py --reduced              # a reduced-width base: a quick run on a CPU
    python benchmarks/throughput.py                        # the official base architecture (random weights)
    python benchmarks/throughput.py --concurrency 1,4 --steps 3 --repeats 3

A measurement queues N one-image requests (base model only, guided, `--steps` ancestral steps) on
an engine whose worker has not started yet, then starts it and waits for all N: so the worker finds
them all waiting and the batches are the ones the engine forms from a full queue (each row shows
how many batches it took). Three engine set-ups share the same network:

- batching off: one job at a time;
- batching on, batch-invariant (the default): jobs share a sampling batch, but each sample's rows
  run through the network on their own, so every image is byte-identical to its solo run;
- batching on, fused: the batch runs as one tensor (faster where the device has idle width, i.e.
  GPUs; images equal solo runs only within float rounding).

Each repeat runs every set-up once, in turn, so that load from other processes falls on all of them
alike; a cell gives the median images per minute over the repeats and their range, and a ratio is
the median of the per-repeat ratios to batching off (with its range). At concurrency 1 every set-up
runs the same computation: its ratios show the noise of the measurement.

Random weights: speed does not depend on the values. A text encoder needs real token ids, so the GPT-2
tokenizer files come from the copies shipped with the tests (tests/reference/, or the folder named by
GLIDE_API_GOLDEN_DIR): nothing is downloaded.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from glide_api.engine import Engine, EngineConfig
from glide_api.models.config import ModelConfig
from glide_api.models.glide import create_model
from glide_api.models.tokenizer import GlideTokenizer
from glide_api.pipeline.glide_pipeline import GlidePipeline
from glide_api.pipeline.loading import LoadedModel, prepare, resolve_device, resolve_precision
from glide_api.pipeline.params import BatchSettings, GenerationRequest

REDUCED = {
    "num_channels": 64,
    "num_res_blocks": 2,
    "xf_width": 256,
    "xf_layers": 4,
    "xf_heads": 4,
    "dropout": 0.0,
}
SETUPS = {"off": (False, True), "on, invariant": (True, True), "on, fused": (True, False)}

TESTS = Path(__file__).resolve().parents[1] / "tests"


def tokenizer() -> GlideTokenizer:
    # tests/golden.py is the one place that knows where the reference copies are.
    sys.path.insert(0, str(TESTS))
    from golden import write_tokenizer_files

    return GlideTokenizer.from_files(*write_tokenizer_files(Path(tempfile.mkdtemp(prefix="glide-bench-"))))


def build_base(*, reduced: bool, device: torch.device, precision: str) -> LoadedModel:
    config = ModelConfig.from_options(REDUCED) if reduced else ModelConfig.preset("base")
    torch.manual_seed(0)
    network = create_model(config)
    for p in network.parameters():  # small random weights keep activations finite
        torch.nn.init.normal_(p, std=0.02)
    return LoadedModel(
        name="random base" + (" (reduced)" if reduced else ""),
        network=prepare(network, device=device, precision=precision),
        tokenizer=tokenizer(),
    )


def run(pipeline: GlidePipeline, *, batching: bool, concurrency: int, steps: int) -> tuple[float, int]:
    """Seconds for `concurrency` one-image requests, all queued before the worker starts, to finish;
    and the number of sampling batches they ran in."""
    settings = BatchSettings(size=64, base_respacing=str(steps))
    config = EngineConfig(max_queue=concurrency, max_batch_images=concurrency, batching=batching)
    engine = Engine(pipeline, config)
    try:
        jobs = [
            engine.submit(GenerationRequest(prompt=f"a photo of thing {i}", settings=settings, seeds=(i,))).id
            for i in range(concurrency)
        ]
        start = time.perf_counter()
        engine.start()
        for job_id in jobs:
            job = engine.wait(job_id, timeout=3600)
            assert job.status == "succeeded", job.error
        seconds = time.perf_counter() - start
        return seconds, engine.stats()["counters"]["batches"]
    finally:
        engine.close()


def spread(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}–{max(values):{fmt}}]"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reduced", action="store_true", help="a reduced-width base (quick)")
    parser.add_argument("--steps", type=int, default=5, help="base steps per image (default 5)")
    parser.add_argument("--concurrency", default="1,4,8", help="requests queued at once (default 1,4,8)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per cell (default 3)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", help="auto, fp32, fp16 (CUDA) or bf16")
    args = parser.parse_args()
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    base = build_base(reduced=args.reduced, device=device, precision=precision)
    levels = [int(c) for c in args.concurrency.split(",")]
    pipelines = {
        label: GlidePipeline(base=base, device=device, precision=precision, batch_invariant=invariant)
        for label, (_, invariant) in SETUPS.items()
    }
    print(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"model {base.name}, {precision}, {args.steps} steps, 64 px, {args.repeats} repeats"
    )
    for label, (batching, _) in SETUPS.items():  # warm-up
        run(pipelines[label], batching=batching, concurrency=1, steps=1)

    rates: dict[tuple[str, int], list[float]] = {}
    batches: dict[tuple[str, int], set[int]] = {}
    for n in levels:
        for _ in range(args.repeats):
            for label, (batching, _) in SETUPS.items():
                seconds, count = run(pipelines[label], batching=batching, concurrency=n, steps=args.steps)
                rates.setdefault((label, n), []).append(n / seconds * 60)
                batches.setdefault((label, n), set()).add(count)

    print(
        f"{'queued':>6} "
        + " ".join(f"{'batching ' + s + ' (img/min)':>33}" for s in SETUPS)
        + f" {'invariant/off':>20} {'fused/off':>20}"
    )
    for n in levels:
        cells = []
        for s in SETUPS:
            formed = "/".join(str(b) for b in sorted(batches[s, n]))
            cells.append(f"{spread(rates[s, n], '.2f'):>22} in {formed:>2} batch(es)")
        ratios = [
            spread([r / off for r, off in zip(rates[s, n], rates["off", n], strict=True)], ".2f")
            for s in ("on, invariant", "on, fused")
        ]
        print(f"{n:>6} " + " ".join(cells) + "".join(f" {r:>20}" for r in ratios))


if __name__ == "__main__":
    main()
