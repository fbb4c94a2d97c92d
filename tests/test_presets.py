"""Presets: named settings offered by /v1/settings, taken as one field by the APIs and one flag by
the command line; the fields a request gives win over its preset's, which win over the defaults."""

from __future__ import annotations

import pytest
import requests
from conftest import running

from glide_api.cli import main
from glide_api.config import ServiceConfig
from glide_api.options import PRESETS, SAMPLER, STEPS, UPSAMPLE_STEPS, with_preset
from glide_api.pipeline.images import read_png_metadata
from glide_api.server import create_app

ASYNC = {"Prefer": "respond-async"}


def test_reference_is_the_declared_defaults_and_fast_has_fewer_steps() -> None:
    assert PRESETS["reference"].values == {
        "steps": STEPS.default,
        "sampler": SAMPLER.default,
        "upsample_steps": UPSAMPLE_STEPS.default,
    }
    assert int(PRESETS["fast"].values["steps"]) < int(STEPS.default)


def test_given_fields_win_over_the_preset() -> None:
    chosen = with_preset("fast", {"steps": "7", "sampler": None, "seed": 3})
    assert chosen == {**PRESETS["fast"].values, "steps": "7", "seed": 3}
    assert with_preset(None, {"steps": None, "eta": 0.5}) == {"eta": 0.5}
    with pytest.raises(ValueError, match="preset: must be one of reference, fast"):
        with_preset("slow", {})


def test_settings_offer_the_presets(server_url) -> None:
    settings = requests.get(f"{server_url}/v1/settings", timeout=10).json()
    assert settings["presets"] == [preset.describe() for preset in PRESETS.values()]
    preset = next(o for o in settings["options"] if o["name"] == "preset")
    assert preset["choices"] == list(PRESETS) and preset["default"] is None


def settings_of(url: str, **fields) -> dict:
    """The settings a job gets (it is cancelled at once: only what it asked for matters here)."""
    r = requests.post(
        f"{url}/v1/generations", json={"prompt": "x", "size": 32, **fields}, headers=ASYNC, timeout=30
    )
    assert r.status_code == 202, r.text
    job = r.json()
    requests.post(f"{url}/v1/jobs/{job['id']}/cancel", timeout=10)
    return job["request"]["settings"]


def test_a_preset_sets_its_values_and_a_requests_own_fields_win(server_url) -> None:
    fast = settings_of(server_url, preset="fast")
    assert (fast["base_respacing"], fast["base_sampler"]) == (PRESETS["fast"].values["steps"], "ddim")
    mixed = settings_of(server_url, preset="fast", steps="3", upsample_steps="2")
    assert (mixed["base_respacing"], mixed["base_sampler"], mixed["upsample_respacing"]) == ("3", "ddim", "2")
    reference = settings_of(server_url, preset="reference", sampler="ddim")
    assert (reference["base_respacing"], reference["base_sampler"]) == ("100", "ddim")


def test_a_preset_overrides_the_operators_step_defaults(small_pipeline) -> None:
    with running(create_app(ServiceConfig(base_steps="7", data_dir="none"), pipeline=small_pipeline)) as url:
        assert settings_of(url)["base_respacing"] == "7"
        assert settings_of(url, preset="reference")["base_respacing"] == PRESETS["reference"].values["steps"]


def test_a_preset_beyond_the_servers_limits_is_a_400_naming_the_preset(small_pipeline) -> None:
    with running(create_app(ServiceConfig(max_steps=50, data_dir="none"), pipeline=small_pipeline)) as url:
        r = requests.post(f"{url}/v1/generations", json={"prompt": "x", "preset": "reference"}, timeout=30)
        assert r.status_code == 400
        error = r.json()["error"]
        assert error["param"] == "preset" and "steps: at most 50 steps" in error["message"], error
        r = requests.post(
            f"{url}/v1/generations", json={"prompt": "x", "preset": "reference", "steps": "60"}, timeout=30
        )
        assert r.json()["error"]["param"] == "steps"  # the request's own field, not the preset's


def test_an_unknown_preset_is_a_400_listing_the_presets(server_url) -> None:
    r = requests.post(f"{server_url}/v1/generations", json={"prompt": "x", "preset": "slow"}, timeout=30)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "preset" and "'reference' or 'fast'" in r.json()["error"]["message"]


def test_the_command_line_takes_a_preset_and_its_own_flags_win(small_model_dirs, tmp_path) -> None:
    out = tmp_path / "fast.png"
    flags = [
        "--base",
        str(small_model_dirs["small-base"]),
        "--upsample",
        "none",
        "--offline",
        "--no-progress",
    ]
    assert main(["generate", "a fox", "--preset", "fast", "--steps", "3", "--out", str(out), *flags]) == 0
    metadata = read_png_metadata(out)
    assert (metadata["base_sampler"], metadata["base_respacing"]) == ("ddim", "3")
