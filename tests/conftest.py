"""Shared fixtures: the golden small models as model folders, and a pipeline built from them."""

from __future__ import annotations

from pathlib import Path

import pytest
from golden import GOLDEN_DIR


@pytest.fixture(scope="session")
def small_model_dirs(tmp_path_factory) -> dict[str, Path]:
    if not (GOLDEN_DIR / "golden.json").is_file():
        pytest.skip(f"reference vectors not found at {GOLDEN_DIR}")
    from small_models import write_small_model_folders

    return write_small_model_folders(tmp_path_factory.mktemp("small-models"))


@pytest.fixture(scope="session")
def small_pipeline(small_model_dirs):
    """base 32 px + upsampler 64 px (+ both inpainting twins), CPU, float32, loaded once."""
    from glide_api.pipeline.text2im import GlidePipeline

    d = {name: str(path) for name, path in small_model_dirs.items()}
    return GlidePipeline.load(base=d["small-base"], upsample=d["small-upsample"],
                              base_inpaint=d["small-base-inpaint"],
                              upsample_inpaint=d["small-upsample-inpaint"],
                              device="cpu", precision="fp32", offline=True)
