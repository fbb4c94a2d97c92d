"""Access to the reference outputs in ../shared/glide/golden/ (absent on a user's machine: tests skip)."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import pytest
import torch

GOLDEN_DIR = Path(
    os.environ.get(
        "GLIDE_API_GOLDEN_DIR", Path(__file__).resolve().parents[2] / "shared" / "glide" / "golden"
    )
)
requires_golden = pytest.mark.skipif(
    not (GOLDEN_DIR / "golden.json").is_file(),
    reason=f"reference vectors not found at {GOLDEN_DIR} (set GLIDE_API_GOLDEN_DIR)",
)
SMALL_CONFIGS = ("small-base", "small-upsample", "small-base-inpaint", "small-upsample-inpaint")


@cache
def golden_json() -> dict:
    return json.loads((GOLDEN_DIR / "golden.json").read_text())


def tensors(name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(GOLDEN_DIR / name)


def small_model(name: str) -> torch.nn.Module:
    """A golden small model with its reference weights loaded (stored as fp16, used as fp32)."""
    from glide_api.models.glide import create_model

    model = create_model(golden_json()["configs"][name])
    weights = tensors(f"{name}.weights.safetensors")
    model.load_state_dict({k: v.float() for k, v in weights.items()})
    return model


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out - ref).norm() / ref.norm()).item()


MANIFEST_DIR = GOLDEN_DIR.parent / "manifests"


def manifest(name: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of an official checkpoint, in state_dict order."""
    shapes = {}
    for line in (MANIFEST_DIR / f"{name}.tsv").read_text().splitlines():
        key, shape, _dtype = line.split("\t")
        shapes[key] = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
    return shapes
