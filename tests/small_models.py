"""Model folders of the golden small models (with the GPT-2 tokenizer files), for pipeline tests."""

from __future__ import annotations

from pathlib import Path

from golden import SMALL_CONFIGS, golden_json, tensors, write_tokenizer_files

from glide_api.models.config import ModelConfig
from glide_api.models.model_folders import save_model_folder


def write_small_model_folders(root: Path) -> dict[str, Path]:
    """root/<name>/{config.json, model.safetensors, encoder.json, vocab.bpe} for each small config."""
    folders = {}
    for name in SMALL_CONFIGS:
        folder = root / name
        config = ModelConfig.from_options(golden_json()["configs"][name])
        save_model_folder(folder, config=config, state_dict=tensors(f"{name}.weights.safetensors"))
        write_tokenizer_files(folder)
        folders[name] = folder
    return folders
