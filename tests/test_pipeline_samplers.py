"""Every sampler through the pipeline, with the golden small models (base 32 px, upsampler 64 px):
both stages, inpainting, merged batches with a guidance scale per sample, and the step rules."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_pipeline import checkerboard, png_bytes, run

from glide_api.errors import InvalidParameter
from glide_api.options import SAMPLERS
from glide_api.pipeline.params import BatchSettings, GenerationRequest, Sample

NEW_SAMPLERS = [s for s in SAMPLERS if s not in ("ancestral", "ddim")]


@pytest.mark.parametrize("sampler", NEW_SAMPLERS)
def test_every_sampler_runs_both_stages_and_a_seed_keeps_its_picture_in_a_merged_batch(
    small_pipeline, sampler
) -> None:
    settings = BatchSettings(
        size=64, base_sampler=sampler, upsample_sampler=sampler, base_respacing="4", upsample_respacing="3"
    )
    samples = [Sample("a red cube", 1, 3.0), Sample("a green field", 2, 7.0)]
    batch = run(small_pipeline, settings, samples)
    assert batch.chain == ["base 32", "upsample 64"]
    solo = run(small_pipeline, settings, samples[1:])
    assert batch.images[1].png == solo.images[0].png  # byte for byte, its own guidance scale
    assert batch.images[0].png != batch.images[1].png
    assert batch.images[1].metadata["base_sampler"] == sampler


@pytest.mark.parametrize("sampler", NEW_SAMPLERS)
def test_every_sampler_inpaints_keeping_the_known_pixels_at_both_stages(small_pipeline, sampler) -> None:
    image = checkerboard(64)
    mask = Image.new("L", (64, 64), 255)
    mask.paste(0, (16, 16, 48, 48))
    request = GenerationRequest.create(
        "a red ball",
        size=64,
        seed=1,
        task="inpaint",
        base_respacing="4",
        upsample_respacing="3",
        base_sampler=sampler,
        upsample_sampler=sampler,
        image=png_bytes(image),
        mask=png_bytes(mask),
    )
    out = np.asarray(small_pipeline.generate(request).images[0].image, dtype=np.int32)
    src = np.asarray(image, dtype=np.int32)
    keep = np.asarray(mask) == 255
    assert np.abs(out[keep] - src[keep]).max() <= 1  # 8-bit rounding
    assert np.abs(out[~keep] - src[~keep]).mean() > 10


def test_dynamic_thresholding_changes_a_strongly_guided_picture_only(small_pipeline) -> None:
    samples = [Sample("a red cube", 3, 30.0)]

    def picture(threshold: float) -> np.ndarray:
        settings = BatchSettings(
            size=32, base_sampler="dpm++2m", base_respacing="6", dynamic_threshold=threshold
        )
        return np.asarray(run(small_pipeline, settings, samples).images[0].image, dtype=np.int32)

    plain, thresholded = picture(0.0), picture(0.9)
    assert np.abs(plain - thresholded).mean() > 1
    assert (thresholded == 255).mean() < (plain == 255).mean()  # fewer saturated pixels


def test_more_log_snr_steps_than_the_schedule_places_is_an_error_naming_the_field(small_pipeline) -> None:
    settings = BatchSettings(size=64, base_sampler="dpm++2m", base_respacing="1000")
    with pytest.raises(InvalidParameter, match=r"^base_respacing: at most 996 steps .* dpm\+\+2m sampler"):
        small_pipeline.validate(settings)
    small_pipeline.validate(BatchSettings(size=64, base_sampler="dpm++2m", base_respacing="ddim40"))
    # The linear schedule of the upsampler places all 1000.
    small_pipeline.validate(BatchSettings(size=64, upsample_sampler="dpm++2m", upsample_respacing="1000"))
