"""The synthetic shapes data set, and the classifier that judges the demo model by it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from glide_api.training.evaluate import CHANCE, Target, score, targets
from glide_api.training.synthetic import (
    COLOURS,
    DEFAULT_SPREAD,
    SHAPES,
    ShapeSpec,
    classify,
    parse_caption,
    render,
    sample_spec,
    write_dataset,
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("shapes"), count=96, seed=11)


def test_images_and_captions_follow_from_seed_and_index_alone(tmp_path) -> None:
    assert sample_spec(5, 17) == sample_spec(5, 17) and sample_spec(5, 17) != sample_spec(6, 17)
    a = write_dataset(tmp_path / "a", count=4, seed=2, size=64)
    b = write_dataset(tmp_path / "b", count=6, seed=2, size=64)  # a longer set starts the same
    for i in range(4):
        assert (a / f"{i:05d}.png").read_bytes() == (b / f"{i:05d}.png").read_bytes()
        assert (a / f"{i:05d}.txt").read_text() == (b / f"{i:05d}.txt").read_text()


def test_shapes_lie_within_the_spread_of_the_middle_and_always_inside_the_picture() -> None:
    def offsets(spread: float) -> np.ndarray:
        specs = [sample_spec(0, i, spread=spread) for i in range(300)]
        for spec in specs:  # the whole shape fits, with a margin, wherever it is
            assert all(spec.extent / 2 < c < 1 - spec.extent / 2 for c in spec.center)
        return np.array([np.abs(np.array(spec.center) - 0.5).max() for spec in specs])

    assert offsets(0.1).max() <= 0.1
    assert offsets(0.0).max() == 0.0
    assert offsets(DEFAULT_SPREAD).max() > 0.25  # anywhere it fits
    # The spread moves shapes only: kinds, colours, sizes and captions stay those of (seed, index).
    near, anywhere = sample_spec(3, 7, spread=0.1), sample_spec(3, 7)
    assert (near.shape, near.colour, near.extent, near.caption) == (
        anywhere.shape,
        anywhere.colour,
        anywhere.extent,
        anywhere.caption,
    )
    with pytest.raises(ValueError, match=r"spread: must be between 0 and 0\.5"):
        sample_spec(0, 0, spread=0.6)


def test_the_data_set_is_256_px_pngs_with_captions_naming_what_is_drawn(dataset) -> None:
    rows = [json.loads(line) for line in (dataset / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 96
    for row in rows:
        assert Image.open(dataset / row["file"]).size == (256, 256)
        text = (dataset / row["file"]).with_suffix(".txt").read_text().strip()
        assert text == row["caption"]
        named = parse_caption(text)
        assert named["colour"] == row["colour"] and named["shape"] == row["shape"]
        assert named["background"] in (None, row["background"])
        assert row["colour"] != row["background"]
    # Every kind, colour and size appears.
    assert {r["shape"] for r in rows} == set(SHAPES) and {r["colour"] for r in rows} == set(COLOURS)
    assert {r["size"] for r in rows} == {"small", "medium", "large"}


def test_the_classifier_reads_the_data_set_itself_without_error(dataset) -> None:
    rows = [json.loads(line) for line in (dataset / "metadata.jsonl").read_text().splitlines()]
    wanted = [Target(colour=r["colour"], shape=r["shape"], background=r["background"]) for r in rows]
    result = score([Image.open(dataset / r["file"]) for r in rows], wanted)
    assert (result.colour, result.background, result.shape) == (1.0, 1.0, 1.0), result


@pytest.mark.parametrize("shape", SHAPES)
def test_the_classifier_tells_each_shape_at_64_px(shape) -> None:
    spec = ShapeSpec(
        shape=shape, colour="red", background="blue", size="small", center=(0.4, 0.6), extent=0.3, caption=""
    )
    reading = classify(render(spec, size=64))
    assert (reading.shape, reading.colour, reading.background) == (shape, "red", "blue")


def test_a_plain_image_has_no_shape() -> None:
    reading = classify(Image.new("RGB", (64, 64), COLOURS["green"]))
    assert reading.shape == "none" and reading.colour is None and reading.background == "green"
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert classify(noise).background in COLOURS  # any image gets a reading, never an error


def test_evaluation_targets_cover_colours_and_shapes_evenly() -> None:
    wanted = targets(24)
    assert {t.colour for t in wanted} == set(COLOURS) and {t.shape for t in wanted} == set(SHAPES)
    assert all(t.colour != t.background for t in wanted)
    assert wanted[0].prompt == "a red circle on a green background"
    assert CHANCE == {"colour": 1 / 6, "background": 1 / 6, "shape": 1 / 4}
