"""The engine driving the real pipeline (golden small models: base 32 px, upsampler 64 px, CPU)."""

from __future__ import annotations

import base64

from engine_fakes import WAIT

from glide_api.engine import Engine, EngineConfig
from glide_api.pipeline.images import open_image
from glide_api.pipeline.params import BatchSettings, GenerationRequest

FAST = BatchSettings(size=64, base_respacing="4", upsample_respacing="3")


def test_jobs_merged_into_one_batch_give_the_images_of_their_solo_runs(small_pipeline) -> None:
    asks = (("a corgi", 1, 3.0), ("a red boat", 2, 5.0), ("mountains", 3, 1.0))
    requests = [
        GenerationRequest(prompt=prompt, settings=FAST, seeds=(seed,), guidance_scale=scale)
        for prompt, seed, scale in asks
    ]
    engine = Engine(small_pipeline, EngineConfig(max_batch_images=4, preview_every=2))
    try:
        jobs = [engine.submit(r) for r in requests]  # all waiting before the worker starts: one batch
        events = engine.subscribe(jobs[0].id, previews=True, timeout=60)
        assert next(events).type == "queued"
        engine.start()
        seen = list(events)
        for job in jobs:
            assert engine.wait(job.id, timeout=60).status == "succeeded"
        merged = [engine.image(job.id, 0) for job in jobs]
    finally:
        engine.close(timeout=WAIT)
    assert engine.stats()["counters"]["batches"] == 1
    assert merged == [small_pipeline.generate(r).images[0].png for r in requests]
    progress = [e for e in seen if e.type == "progress"]
    assert [(e.progress.stage_index, e.progress.step) for e in progress] == [
        (0, 1),
        (0, 2),
        (0, 3),
        (0, 4),
        (1, 1),
        (1, 2),
        (1, 3),
    ]
    previews = [open_image(base64.b64decode(e.preview)) for e in progress if e.preview is not None]
    assert [p.size for p in previews] == [(32, 32)] * 2 + [(64, 64)] * 2  # steps 2, 4 | 2, 3 (stage end)
