"""Model folders: a fine-tuned or trained model as ``config.json`` + ``model.safetensors``.

``config.json`` holds the official option names (`ModelConfig.to_options`); the weights are
``model.safetensors`` (written here) or ``model.pt`` (read too). A folder may also carry its own
tokenizer files (see `glide_api.models.tokenizer`), which these functions leave alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from glide_api.download import atomic_write, sha256_file
from glide_api.errors import ChecksumMismatch, InvalidParameter, WeightsNotFound
from glide_api.models.config import ModelConfig
from glide_api.models.tensor_files import plain_tensors, save_safetensors, torch_load

if TYPE_CHECKING:
    import torch

__all__ = ["read_model_folder", "save_model_folder"]

_CONFIG, _WEIGHTS, _WEIGHTS_PT = "config.json", "model.safetensors", "model.pt"


def save_model_folder(
    path: str | os.PathLike[str], *, config: ModelConfig, state_dict: Mapping[str, torch.Tensor]
) -> Path:
    """Write a model folder, ``config.json`` (official option names) and ``model.safetensors``.

    Each file appears atomically, weights first, so a config.json is never ahead of its weights.
    Other files in the folder (tokenizer, an older model.pt) are left alone. Returns the folder.
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    save_safetensors(plain_tensors(state_dict, source=folder), folder / _WEIGHTS, metadata={"format": "pt"})
    text = json.dumps(config.to_options(), indent=2, sort_keys=True) + "\n"
    atomic_write(folder / _CONFIG, text.encode())
    return folder


def read_model_folder(
    path: str | os.PathLike[str], *, sha256: str | None = None
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Read a model folder: ``config.json`` and ``model.safetensors`` (preferred) or ``model.pt``.

    Raises `WeightsNotFound` for a missing folder or missing weights; `InvalidParameter` for a path
    that is not a folder or a folder without config.json (and `ModelConfig`'s error for an invalid
    config); `ChecksumMismatch` when the weights file's sha256 differs from `sha256` (hashed in full
    each time: no records are written into user folders).
    """
    folder = Path(path)
    expected = f"{_CONFIG} (official option names) and {_WEIGHTS} or {_WEIGHTS_PT}"
    if not folder.exists():
        raise WeightsNotFound(f"model folder {folder} does not exist")
    if not folder.is_dir():
        raise InvalidParameter(f"{folder} is not a model folder: expected a folder holding {expected}")
    if not (folder / _CONFIG).is_file():
        raise InvalidParameter(
            f"{folder} is not a model folder: {_CONFIG} is missing (a model folder holds {expected})"
        )
    config = ModelConfig.from_json_file(folder / _CONFIG)
    weights = next((folder / n for n in (_WEIGHTS, _WEIGHTS_PT) if (folder / n).is_file()), None)
    if weights is None:
        raise WeightsNotFound(f"model folder {folder} has no weights: expected {_WEIGHTS} or {_WEIGHTS_PT}")
    if sha256 is not None and (digest := sha256_file(weights)) != sha256.lower():
        raise ChecksumMismatch(f"{weights} has sha256 {digest}, expected {sha256.lower()}")
    if weights.name == _WEIGHTS:
        from safetensors.torch import load_file

        return config, load_file(weights)
    return config, plain_tensors(torch_load(weights), source=weights)
