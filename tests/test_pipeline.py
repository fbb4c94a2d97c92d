"""The text-to-image and inpainting pipeline, with the golden small models (base 32, upsampler 64)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from glide_api.pipeline.images import read_png_metadata
from glide_api.pipeline.outputs import PipelineOutput, StageProgress
from glide_api.pipeline.params import BatchSettings, GenerationRequest, Sample

FAST = {"base_respacing": "4", "upsample_respacing": "3"}


def run(pipeline, settings, samples) -> PipelineOutput:
    events = list(pipeline.stream(settings, samples))
    assert isinstance(events[-1], PipelineOutput)
    return events[-1]


def test_same_seed_and_settings_give_byte_identical_png(small_pipeline) -> None:
    request = GenerationRequest.create("a red cube", size=64, seed=11, **FAST)
    first = small_pipeline.generate(request).images[0].png
    assert small_pipeline.generate(request).images[0].png == first
    other = GenerationRequest.create("a red cube", size=64, seed=12, **FAST)
    assert small_pipeline.generate(other).images[0].png != first


def test_batch_of_three_prompts_equals_three_single_runs(small_pipeline) -> None:
    settings = BatchSettings(size=64, **FAST)
    samples = [Sample("a red cube", 1, 3.0), Sample("a green field at night", 2, 5.0), Sample("", 3, 0.0)]
    batch = run(small_pipeline, settings, samples)
    for i, s in enumerate(samples):
        assert batch.images[i].png == run(small_pipeline, settings, [s]).images[0].png
        assert batch.images[i].seed == s.seed


@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_every_size_returns_an_image_of_exactly_that_size(small_pipeline, size) -> None:
    settings = BatchSettings(size=size, base_respacing="2", upsample_respacing="2")
    out = run(small_pipeline, settings, [Sample("a corgi", 5)])
    image = Image.open(io.BytesIO(out.images[0].png))
    assert image.size == (size, size) and out.images[0].image.size == (size, size)
    assert out.chain[-1].endswith(str(size))


def test_large_sizes_reapply_the_upsampler_at_2x_per_doubling(small_pipeline) -> None:
    stages = small_pipeline.plan(BatchSettings(size=256))
    assert [s.label for s in stages] == ["base 32", "upsample 64", "upsample-2x 128", "upsample-2x 256"]


def test_upsampling_given_pictures_follows_each_samples_seed_and_refuses_a_miscount(small_pipeline) -> None:
    from glide_api.pipeline.glide_pipeline import GlidePipeline

    low = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    settings = BatchSettings(size=64, **FAST)
    samples = [Sample("a red cube", 1), Sample("a blue ball", 2)]
    pictures = small_pipeline.upsample_images(low, samples, settings)
    assert [p.size for p in pictures] == [(64, 64), (64, 64)]
    alone = small_pipeline.upsample_images(low[1:], samples[1:], settings)
    assert alone[0].tobytes() == pictures[1].tobytes()
    with pytest.raises(ValueError, match="samples: one per low-res image"):
        small_pipeline.upsample_images(low, samples[:1], settings)
    with pytest.raises(ValueError, match="no upsampler is loaded"):
        GlidePipeline(base=small_pipeline.base).upsample_images(low, samples, settings)


def test_metadata_chunk_round_trips_and_reproduces_the_image(small_pipeline) -> None:
    request = GenerationRequest.create(
        "a blue ball", size=64, seed=3, guidance_scale=4.0, upsample_temp=0.9, **FAST
    )
    image = small_pipeline.generate(request).images[0]
    metadata = read_png_metadata(image.png)
    assert metadata == image.metadata
    assert metadata["prompt"] == "a blue ball" and metadata["seed"] == 3
    assert metadata["guidance_scale"] == 4.0 and metadata["size"] == 64
    assert metadata["chain"] == ["base 32", "upsample 64"]
    again = small_pipeline.generate(GenerationRequest.from_metadata(metadata))
    assert again.images[0].png == image.png


def test_progress_is_reported_after_every_step_of_every_stage(small_pipeline) -> None:
    events = list(small_pipeline.stream(BatchSettings(size=64, **FAST), [Sample("x", 1), Sample("y", 2)]))
    progress = [e for e in events if isinstance(e, StageProgress)]
    assert [(e.progress.stage, e.progress.step, e.progress.total) for e in progress] == (
        [("base 32", i, 4) for i in range(1, 5)] + [("upsample 64", i, 3) for i in range(1, 4)]
    )
    assert {e.progress.stages for e in progress} == {2}
    assert progress[0].pred_x0.shape == (2, 3, 32, 32)
    output = events[-1]
    assert set(output.stage_seconds) == {"base 32", "upsample 64"}
    assert output.models["base"].endswith("small-base")
    assert output.peak_memory_bytes is None  # CPU


def test_closing_the_stream_stops_the_work(small_pipeline) -> None:
    stream = small_pipeline.stream(BatchSettings(size=64, **FAST), [Sample("x", 1)])
    first = next(stream)
    stream.close()
    assert first.progress.step == 1
    with pytest.raises(StopIteration):
        next(stream)


def test_size_the_models_cannot_make_is_a_value_error_listing_sizes(small_pipeline) -> None:
    with pytest.raises(ValueError, match=r"size: must be one of 32, 64, 128, 256 for text2im"):
        small_pipeline.validate(BatchSettings(size=100))


def test_inpainting_sizes_stop_at_the_upsampler(small_pipeline) -> None:
    assert small_pipeline.sizes("inpaint") == [32, 64]


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def checkerboard(size: int) -> Image.Image:
    values = (torch.arange(size)[:, None] // 8 + torch.arange(size)[None] // 8) % 2
    data = (values * 200 + 30).to(torch.uint8)[..., None].expand(size, size, 3).contiguous()
    return Image.fromarray(data.numpy(), mode="RGB")


def test_inpainting_keeps_known_pixels_and_changes_the_masked_region(small_pipeline) -> None:
    image = checkerboard(64)
    mask = Image.new("L", (64, 64), 255)
    mask.paste(0, (16, 16, 48, 48))  # paint the centre
    request = GenerationRequest.create(
        "a red ball", size=64, seed=1, task="inpaint", **FAST, image=png_bytes(image), mask=png_bytes(mask)
    )
    out = np.asarray(small_pipeline.generate(request).images[0].image, dtype=np.int32)
    src = np.asarray(image, dtype=np.int32)
    keep = np.asarray(mask) == 255
    assert np.abs(out[keep] - src[keep]).max() <= 1  # 8-bit rounding
    assert np.abs(out[~keep] - src[~keep]).mean() > 10


def test_inpainting_mask_can_be_the_images_alpha_channel(small_pipeline) -> None:
    rgba = checkerboard(64).convert("RGBA")
    alpha = Image.new("L", (64, 64), 255)
    alpha.paste(0, (0, 0, 64, 20))
    rgba.putalpha(alpha)
    request = GenerationRequest.create("sky", size=32, seed=2, task="inpaint", **FAST, image=png_bytes(rgba))
    out = small_pipeline.generate(request).images[0]
    assert out.image.size == (32, 32) and out.metadata["task"] == "inpaint"


def test_inpainting_image_and_mask_of_different_sizes_is_an_error(small_pipeline) -> None:
    request = GenerationRequest.create(
        "x",
        size=64,
        seed=1,
        task="inpaint",
        image=png_bytes(checkerboard(64)),
        mask=png_bytes(Image.new("L", (32, 32), 0)),
    )
    with pytest.raises(ValueError, match="mask: its size 32x32 differs from the image's 64x64"):
        small_pipeline.generate(request)


def test_inpainting_without_a_mask_or_alpha_is_an_error(small_pipeline) -> None:
    request = GenerationRequest.create(
        "x", size=64, seed=1, task="inpaint", image=png_bytes(checkerboard(64))
    )
    with pytest.raises(ValueError, match="mask: give a mask image"):
        small_pipeline.generate(request)


def test_an_upload_that_is_not_an_image_is_a_value_error(small_pipeline) -> None:
    request = GenerationRequest.create("x", size=64, seed=1, task="inpaint", image=b"not a png")
    with pytest.raises(ValueError, match="not a readable image"):
        small_pipeline.generate(request)


def test_request_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="upsample_temp"):
        BatchSettings(size=64, upsample_temp=1.5)
    with pytest.raises(ValueError, match="base_respacing"):
        BatchSettings(size=64, base_respacing="2000")
    with pytest.raises(ValueError, match="seeds: give one per image"):
        GenerationRequest(prompt="x", settings=BatchSettings(size=64), batch_size=2, seeds=(1,))
    with pytest.raises(ValueError, match="prompt: must be text"):
        GenerationRequest(prompt=None, settings=BatchSettings(size=64))


def test_missing_seeds_are_drawn_and_reported() -> None:
    request = GenerationRequest(prompt="x", settings=BatchSettings(size=64), batch_size=3)
    assert len(request.seeds) == 3 and len({*request.seeds}) == 3
    assert GenerationRequest.from_dict(request.to_dict()) == request


def test_an_opaque_rgba_mask_is_read_by_its_grey_levels(small_pipeline) -> None:
    # Browser canvases save RGBA even when fully opaque: black must still mean "paint".
    mask = Image.new("RGBA", (64, 64), (255, 255, 255, 255))
    mask.paste((0, 0, 0, 255), (0, 0, 64, 32))
    request = GenerationRequest.create(
        "sky",
        size=64,
        seed=2,
        task="inpaint",
        **FAST,
        image=png_bytes(checkerboard(64)),
        mask=png_bytes(mask),
    )
    out = np.asarray(small_pipeline.generate(request).images[0].image, dtype=np.int32)
    src = np.asarray(checkerboard(64), dtype=np.int32)
    assert np.abs(out[40:] - src[40:]).max() <= 1 and np.abs(out[:24] - src[:24]).mean() > 10


def test_models_added_later_fill_empty_roles_at_once_and_never_replace_a_model(small_pipeline) -> None:
    from glide_api.pipeline.glide_pipeline import GlidePipeline

    pipeline = GlidePipeline(base=small_pipeline.base, upsample=small_pipeline.upsample)
    assert pipeline.sizes("inpaint") == []
    pipeline.add_models(
        {"base_inpaint": small_pipeline.base_inpaint, "upsample_inpaint": small_pipeline.upsample_inpaint}
    )
    assert pipeline.sizes("inpaint") == small_pipeline.sizes("inpaint") == [32, 64]
    with pytest.raises(ValueError, match="base: already holds"):
        pipeline.add_models({"base": small_pipeline.base})
    with pytest.raises(ValueError, match="is a base model, not a base-inpaint model"):
        GlidePipeline().add_models({"base_inpaint": small_pipeline.base})
