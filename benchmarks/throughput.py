"""Engine throughput: images per minute at 64 px for 1, 4 and 8 concurrent requests, batching off/on.

    python benchmarks/throughput.py                  # a reduced-width base (fast on a CPU)
    python benchmarks/throughput.py --full --steps 5 # the official base architecture (slow on a CPU)

Each request is one 64 px image (base model only, guided, `--steps` ancestral steps) submitted by its
own thread at once; a row reports how long the engine takes to finish them all. Three engine
set-ups run in the same process, on the same weights:

- batching off: one job at a time;
- batching on, batch-invariant (the default): jobs share a sampling batch, but each sample's rows
  run through the network on their own, so every image is byte-identical to its solo run;
- batching on, fused: the batch runs as one tensor (faster where the device has idle width, i.e.
  GPUs; images equal solo runs only within float rounding).

Random weights: speed does not depend on the values. A text encoder needs real token ids, so the GPT-2
tokenizer files come from the copies shipped with the tests (tests/reference/, or the folder named by
GLIDE_API_GOLDEN_DIR): nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from glide_api.engine import Engine, EngineConfig
from glide_api.models.config import ModelConfig
from glide_api.models.glide import create_model
from glide_api.models.tokenizer import GlideTokenizer
from glide_api.pipeline.glide_pipeline import GlidePipeline
from glide_api.pipeline.loading import LoadedModel, resolve_device
from glide_api.pipeline.params import BatchSettings, GenerationRequest

REDUCED = {
    "num_channels": 64,
    "num_res_blocks": 2,
    "xf_width": 256,
    "xf_layers": 4,
    "xf_heads": 4,
    "dropout": 0.0,
}


TESTS = Path(__file__).resolve().parents[1] / "tests"


def tokenizer() -> GlideTokenizer:
    # tests/golden.py is the one place that knows where the reference copies are.
    sys.path.insert(0, str(TESTS))
    from golden import write_tokenizer_files

    return GlideTokenizer.from_files(*write_tokenizer_files(Path(tempfile.mkdtemp(prefix="glide-bench-"))))


def build_base(full: bool, device: torch.device) -> LoadedModel:
    config = ModelConfig.preset("base") if full else ModelConfig.from_options(REDUCED)
    torch.manual_seed(0)
    network = create_model(config)
    for p in network.parameters():  # small random weights keep activations finite
        torch.nn.init.normal_(p, std=0.02)
    return LoadedModel(
        name="random base" + ("" if full else " (reduced)"), network=network.to(device), tokenizer=tokenizer()
    )


def run(engine: Engine, concurrency: int, steps: int) -> float:
    """Seconds for `concurrency` simultaneous one-image requests to all finish."""
    settings = BatchSettings(size=64, base_respacing=str(steps))
    jobs: list[str] = []
    lock = threading.Lock()

    def submit(i: int) -> None:
        job = engine.submit(GenerationRequest(prompt=f"a photo of thing {i}", settings=settings, seeds=(i,)))
        with lock:
            jobs.append(job.id)

    start = time.perf_counter()
    threads = [threading.Thread(target=submit, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for job_id in jobs:
        job = engine.wait(job_id, timeout=3600)
        assert job.status == "succeeded", job.error
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="the official base architecture")
    parser.add_argument("--steps", type=int, default=10, help="base steps per image (default 10)")
    parser.add_argument("--concurrency", default="1,4,8")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    base = build_base(args.full, device)
    levels = [int(c) for c in args.concurrency.split(",")]
    setups = {"off": (False, True), "on, invariant": (True, True), "on, fused": (True, False)}
    print(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"model {base.name}, {args.steps} steps, 64 px"
    )
    rates: dict[tuple[str, int], float] = {}
    for label, (batching, invariant) in setups.items():
        pipeline = GlidePipeline(base=base, device=device, precision="fp32", batch_invariant=invariant)
        config = EngineConfig(max_queue=max(levels), max_batch_images=max(levels), batching=batching)
        with Engine(pipeline, config) as engine:
            run(engine, 1, 1)  # warm-up
            for n in levels:
                rates[label, n] = n / run(engine, n, args.steps) * 60
    print(
        f"{'concurrent':>10} "
        + " ".join(f"{'batching ' + s:>24}" for s in setups)
        + f" {'ratio invariant/off':>20} {'ratio fused/off':>16}"
    )
    for n in levels:
        cells = " ".join(f"{rates[s, n]:>19.1f} img/min" for s in setups)
        print(
            f"{n:>10} {cells} {rates['on, invariant', n] / rates['off', n]:>20.2f} "
            f"{rates['on, fused', n] / rates['off', n]:>16.2f}"
        )


if __name__ == "__main__":
    main()
