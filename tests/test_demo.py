"""The shipped demo models: small, offline, and they follow colour and shape prompts.

Adherence is measured with the synthetic data set's own classifier over 24 prompts that cycle
through every colour and shape (`glide_api.training.evaluate.targets`), each sampled with the same
seed at guidance 3 and at guidance 0, with the base model's 64 px output and few sampling steps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from PIL import Image

from glide_api.demo import DEMO_DIR, DEMO_MODELS, demo_name
from glide_api.pipeline.outputs import PipelineOutput
from glide_api.pipeline.params import BatchSettings, Sample
from glide_api.training.evaluate import (
    CHANCE,
    measure,
    targets,
    word_changes,
    word_influence,
    word_influences,
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = 24
STEPS = "ddim16"  # DDIM: deterministic, and close to the 100-step result for these flat pictures
# "Far above chance": a model ignoring the prompt (1/6) reaches 15 of 24 with probability 6e-7.
# The shipped base measured 92% colours and 100% backgrounds here, 75% and 94% over 48 other
# seeds (model card); the thresholds leave room for another machine's rounding.
COLOUR_THRESHOLD = 0.6  # chance: 1/6 (six colours)
BACKGROUND_THRESHOLD = 0.75  # chance: 1/6
# A model ignoring the shape word (1/4) reaches 12 of 24 with probability 0.007; the shipped base
# measured 67% here, 63% over all 168 prompts and seeds in its model card. (Unguided, on these
# seeds, it happens to draw the asked-for kind 13 times: 24 samples are few for a 1-in-4 reading.)
SHAPE_THRESHOLD = 0.5  # chance: 1/4 (four shapes)
# Mean |downscale(256 px output) - 64 px input| as a fraction of full range. The upsampler measured
# 4-9/255 over 8 clean synthetic inputs (model card); 6/255 held for the first base's pictures only.
UPSAMPLE_MAE_BOUND = 10 / 255


@pytest.fixture(scope="module")
def demo_pipeline(tmp_path_factory):
    from glide_api.models.weights_source import WeightsSource
    from glide_api.pipeline.glide_pipeline import GlidePipeline

    return GlidePipeline.load(
        base="demo-base",
        upsample="demo-upsample",
        device="cpu",
        precision="fp32",
        batch_invariant=False,
        source=WeightsSource.from_env(offline=True, cache=tmp_path_factory.mktemp("empty")),
    )


def run(pipeline, settings: BatchSettings, samples: list[Sample]) -> list[Image.Image]:
    output = next(e for e in pipeline.stream(settings, samples) if isinstance(e, PipelineOutput))
    return [g.image for g in output.images]


@pytest.fixture(scope="module")
def adherence(demo_pipeline):
    """Scores at guidance 3 and 0 for the same prompts and seeds (one sampling batch of 48)."""
    return measure(demo_pipeline, count=SAMPLES, first_seed=0, guidance_scales=(3.0, 0.0), respacing=STEPS)


def test_the_demo_pair_is_a_64_px_base_and_a_256_px_upsampler_of_a_few_megabytes() -> None:
    total = 0
    for name, size, kind in (("demo-base", 64, "base"), ("demo-upsample", 256, "upsample")):
        folder = DEMO_MODELS[name]
        config = json.loads((folder / "config.json").read_text())
        assert config["image_size"] == size and config["n_vocab"] == 257
        assert json.loads((folder / "tokenizer.json").read_text()) == {"type": "bytes"}
        assert demo_name(folder) == name and (kind == "upsample") == config["super_res"]
        total += (folder / "model.safetensors").stat().st_size
    assert total < 16 * 2**20, f"{total / 2**20:.1f} MiB"  # 3.3 M + 4.0 M parameters in fp16
    card = (DEMO_DIR / "README.md").read_text()
    assert "glide-api train" in card and "glide-api synthetic" in card


def test_the_requested_colour_and_background_are_drawn_far_above_chance(adherence) -> None:
    result = adherence[3.0]
    assert result.colour >= COLOUR_THRESHOLD >= 3 * CHANCE["colour"], str(result)
    assert result.background >= BACKGROUND_THRESHOLD, str(result)


def test_the_requested_shape_is_drawn_above_chance(adherence) -> None:
    result = adherence[3.0]
    assert result.shape >= SHAPE_THRESHOLD > CHANCE["shape"], str(result)


def test_guidance_scale_3_follows_the_prompt_better_than_guidance_0(adherence) -> None:
    guided, unguided = adherence[3.0], adherence[0.0]
    total = {g: r.colour + r.background + r.shape for g, r in adherence.items()}
    assert total[3.0] > total[0.0], f"guided: {guided}; unguided: {unguided}"


def test_the_upsampler_output_agrees_with_its_low_res_input(demo_pipeline) -> None:
    import numpy as np

    samples = [Sample(prompt=t.prompt, seed=100 + i, guidance_scale=3.0) for i, t in enumerate(targets(2))]
    base = BatchSettings(size=64, base_respacing="ddim8", base_sampler="ddim", upsample_respacing="ddim10")
    up = BatchSettings(size=256, base_respacing="ddim8", base_sampler="ddim", upsample_respacing="ddim10")
    # One sample per run: at 256 px the upsampler takes about a fifth less time per image alone
    # than with two in one tensor (2 CPU cores); a seed gives the same pictures up to float rounding.
    low = [run(demo_pipeline, base, [sample])[0] for sample in samples]
    high = [run(demo_pipeline, up, [sample])[0] for sample in samples]

    def error(large: Image.Image, small: Image.Image) -> float:
        reduced = np.asarray(large.resize((64, 64), Image.Resampling.BOX), dtype=np.float64)
        return float(np.abs(reduced - np.asarray(small, dtype=np.float64)).mean() / 255)

    for i, large in enumerate(high):
        assert large.size == (256, 256)
        own, other = error(large, low[i]), error(large, low[1 - i])
        assert own < UPSAMPLE_MAE_BOUND, f"mean abs error {own * 255:.1f}/255"
        assert own < other / 4, f"{own * 255:.1f}/255 from its input, {other * 255:.1f}/255 from another"


def test_the_evaluate_command_prints_adherence_per_guidance_scale_and_saves_the_pictures(
    tmp_path, capsys
) -> None:
    from glide_api.cli import main

    sheet = tmp_path / "grid.png"
    assert (
        main(["evaluate", "--count", "6", "--guidance", "3", "0", "--steps", "ddim4", "--grid", str(sheet)])
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("guidance 3: colour ") and lines[0].endswith("over 6 samples")
    assert lines[1].startswith("guidance 0: colour ") and "shape" in lines[1]
    assert Image.open(sheet).size == (6 * 64 + 5 * 2, 2 * 64 + 2)


def test_word_influence_is_zero_for_the_same_prompt_and_grows_with_words_the_model_uses(
    demo_pipeline,
) -> None:
    prompts = [t.prompt for t in targets(2)]
    same = word_influence(demo_pipeline.base, prompts, {"none": prompts}, timesteps=(500,))
    assert same == {"none": {500: 0.0}}  # the same noise for both: only the prompt can move it
    table = word_influences(demo_pipeline, count=8)
    assert list(table) == ["background", "shape colour", "kind of shape", "a typo"]
    # The demo base follows colours (model card, the same 8 prompts): changing one moves it far
    # more than a typo does. On 2 prompts one typo can move it as much as a colour.
    for part in ("background", "shape colour"):
        assert all(table[part][t] > 2 * table["a typo"][t] for t in (500, 850)), table


def test_word_changes_change_one_word_of_the_prompt() -> None:
    for target in targets(24):
        for part, prompt in word_changes(target).items():
            before, after = target.prompt.split(), prompt.split()
            assert len(before) == len(after)
            assert sum(a != b for a, b in zip(before, after, strict=True)) == 1, (part, prompt)
    assert word_changes(targets(1)[0])["a typo"] == "a red circxe on a green background"


def test_the_evaluate_command_prints_how_far_each_word_moves_the_prediction(capsys) -> None:
    from glide_api.cli import main

    # The table's layout is the same for any count; its values are tested above, on 8 prompts.
    assert main(["evaluate", "--words", "--count", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["t=500", "t=850"]
    rows = {line[:16].strip(): [float(v) for v in line[16:].split()] for line in lines[2:6]}
    assert list(rows) == ["background", "shape colour", "kind of shape", "a typo"]
    assert all(len(v) == 2 and min(v) >= 0 for v in rows.values())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--count", "0"], "count: must be a positive number"),
        (["--words", "--count", "0"], "count: must be a positive number"),
        (["demo-upsample"], "not a base model"),
    ],
)
def test_the_evaluate_command_refuses_what_it_cannot_score(argv, message, capsys) -> None:
    from glide_api.cli import main

    assert main(["evaluate", *argv]) == 1
    assert message in capsys.readouterr().err


def _offline_env(tmp_path: Path) -> dict[str, str]:
    cache = tmp_path / "empty-cache"
    cache.mkdir()
    return {
        **os.environ,
        "GLIDE_API_OFFLINE": "1",
        "GLIDE_API_CACHE": str(cache),
        "PYTHONPATH": str(ROOT),
        "GLIDE_API_BASE_URL": "http://127.0.0.1:9/unreachable",
    }


def test_generate_with_the_demo_model_works_offline_with_an_empty_cache(tmp_path) -> None:
    out = tmp_path / "red.png"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "glide_api.cli",
            "generate",
            "--model",
            "demo",
            "a red circle on a blue background",
            "--size",
            "64",
            "--steps",
            "ddim16",
            "--sampler",
            "ddim",
            "--seed",
            "3",
            "--out",
            str(out),
            "--no-progress",
        ],
        env=_offline_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    from glide_api.pipeline.images import read_png_metadata

    assert Image.open(out).size == (64, 64)
    assert read_png_metadata(out)["models"] == {"base": "demo-base"}
    assert not any((tmp_path / "empty-cache").iterdir())  # nothing was fetched


def test_glide_api_serve_model_demo_fetches_nothing_and_generates(tmp_path) -> None:
    from test_cli_serve import free_port, started

    env = _offline_env(tmp_path)
    del env["GLIDE_API_OFFLINE"]  # not told to stay offline: the demo must simply not need the network
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "glide_api.cli",
        "serve",
        "--model",
        "demo",
        "--port",
        str(port),
        "--device",
        "cpu",
    ]
    with started(command, port, env) as url:
        models = requests.get(f"{url}/v1/models", timeout=10).json()["models"]
        assert models["base"]["example_prompt"] in models["base"]["about"]
        r = requests.post(
            f"{url}/v1/generations",
            json={
                "prompt": "a red circle on a blue background",
                "size": 64,
                "steps": "ddim16",
                "sampler": "ddim",
                "seed": 3,
            },
            timeout=120,
        )
        assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    assert not any((tmp_path / "empty-cache").iterdir())


def test_serving_the_demo_model_offline_lists_it_in_v1_models(tmp_path, monkeypatch) -> None:
    from glide_api.config import ServiceConfig
    from glide_api.server import create_app

    monkeypatch.setenv("GLIDE_API_OFFLINE", "1")
    config = ServiceConfig(model="demo", device="cpu", cache_dir=str(tmp_path / "empty-cache"))
    assert config.specs()["base_inpaint"] is None
    assert config.specs()["upsample"] == str(DEMO_MODELS["demo-upsample"])
    app = create_app(config)
    try:
        client = app.test_client()
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, client.get("/readyz").get_json()
            time.sleep(0.1)
        models = client.get("/v1/models").get_json()
        assert {role: m["name"] for role, m in models["models"].items()} == {
            "base": "demo-base",
            "upsample": "demo-upsample",
        }
        assert models["models"]["base"]["tokenizer"] == "bytes"
        assert client.get("/v1/settings").get_json()["sizes"] == {
            "text2im": [64, 128, 256, 512, 1024],
            "inpaint": [],
            "img2img": [64, 128, 256, 512, 1024],
        }
    finally:
        app.extensions["glide_api"].close()
