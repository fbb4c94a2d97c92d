"""Model folders of the golden small models (with the GPT-2 tokenizer files), for pipeline tests."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

from golden import GOLDEN_DIR, SMALL_CONFIGS, golden_json, tensors

from glide_api.models.config import ModelConfig
from glide_api.models.model_folders import save_model_folder


def write_small_model_folders(root: Path) -> dict[str, Path]:
    """root/<name>/{config.json, model.safetensors, encoder.json, vocab.bpe} for each small config."""
    folders = {}
    for name in SMALL_CONFIGS:
        folder = root / name
        config = ModelConfig.from_options(golden_json()["configs"][name])
        save_model_folder(folder, config=config, state_dict=tensors(f"{name}.weights.safetensors"))
        for file in ("encoder.json", "vocab.bpe"):
            with gzip.open(GOLDEN_DIR / f"{file}.gz", "rb") as src, open(folder / file, "wb") as dst:
                shutil.copyfileobj(src, dst)
        folders[name] = folder
    return folders
