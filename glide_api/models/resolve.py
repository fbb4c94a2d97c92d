"""`resolve_model`: what a model spec names (an official checkpoint or a model folder), as
``(ModelConfig, state_dict)``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from glide_api.errors import InvalidParameter
from glide_api.models.config import ModelConfig
from glide_api.models.model_folders import read_model_folder
from glide_api.models.official_files import load_checkpoint
from glide_api.models.registry import CHECKPOINTS, REGISTRY
from glide_api.models.weights_source import WeightsSource

if TYPE_CHECKING:
    import torch

__all__ = ["resolve_model"]


def resolve_model(
    spec: str, *, source: WeightsSource, sha256: str | None = None
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """The configuration and state_dict that `spec` names.

    `spec` is an official name (`CHECKPOINTS`; from `source`'s cache, downloaded if needed, see
    `fetch_checkpoint`) or the path of a model folder (`read_model_folder`). Official names win
    over same-named folders in the working directory: write ``./base`` for such a folder.
    `sha256` pins the weights file. Build the network with
    ``glide_api.models.glide.create_model(config)`` and load the state_dict into it strictly.
    Raises `InvalidParameter` for a spec that is neither, listing the official names. (A model
    folder's own tokenizer, if any, comes from ``load_tokenizer(folder=spec)``.)
    """
    if spec in CHECKPOINTS:
        state_dict = load_checkpoint(spec, source=source, sha256=sha256)
        return ModelConfig.preset(REGISTRY[spec].preset or spec), state_dict
    if spec in REGISTRY:
        raise InvalidParameter(
            f"{spec} is a download-only file, not a GLIDE model; models are "
            f"{', '.join(CHECKPOINTS)} or a model folder"
        )
    if spec and Path(spec).expanduser().exists():
        return read_model_folder(Path(spec).expanduser(), sha256=sha256)
    raise InvalidParameter(
        f"unknown model {spec!r}: neither an official name "
        f"({', '.join(CHECKPOINTS)}) nor an existing model folder"
    )
