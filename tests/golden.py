"""Access to the reference vectors that ship with the tests, in tests/reference/ (see its README.md).

`GLIDE_API_GOLDEN_DIR` names another folder laid out the same way (manifests/ included), e.g. a
freshly regenerated set; this module is the one place that decides which folder the tests read.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from functools import cache
from pathlib import Path

import torch

GOLDEN_DIR = Path(os.environ.get("GLIDE_API_GOLDEN_DIR", Path(__file__).resolve().parent / "reference"))
MANIFEST_DIR = GOLDEN_DIR / "manifests"
SMALL_CONFIGS = ("small-base", "small-upsample", "small-base-inpaint", "small-upsample-inpaint")


@cache
def golden_json() -> dict:
    return json.loads((GOLDEN_DIR / "golden.json").read_text())


def tensors(name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(GOLDEN_DIR / name)


def write_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    """GPT-2's encoder.json and vocab.bpe, gunzipped from the reference copies into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("encoder.json", "vocab.bpe"):
        with gzip.open(GOLDEN_DIR / f"{name}.gz", "rb") as src, open(folder / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return folder / "encoder.json", folder / "vocab.bpe"


def small_model(name: str) -> torch.nn.Module:
    """A golden small model with its reference weights loaded (stored as fp16, used as fp32)."""
    from glide_api.models.glide import create_model

    model = create_model(golden_json()["configs"][name])
    weights = tensors(f"{name}.weights.safetensors")
    model.load_state_dict({k: v.float() for k, v in weights.items()})
    return model


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out - ref).norm() / ref.norm()).item()


def manifest(name: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of an official checkpoint, in state_dict order."""
    shapes = {}
    for line in (MANIFEST_DIR / f"{name}.tsv").read_text().splitlines():
        key, shape, _dtype = line.split("\t")
        shapes[key] = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
    return shapes
