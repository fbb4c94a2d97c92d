"""The byte-level tokenizer a small model folder may carry, and how model folders pick their tokenizer."""

from __future__ import annotations

import json

import pytest
import torch

from glide_api.errors import WeightsNotFound
from glide_api.models.config import ModelConfig
from glide_api.models.glide import create_model
from glide_api.models.model_folders import save_model_folder
from glide_api.models.tokenizer import ByteTokenizer, load_tokenizer, tokenizer_type
from glide_api.models.weights_source import WeightsSource
from glide_api.pipeline.loading import load_model

TINY = {
    "image_size": 32,
    "num_channels": 32,
    "num_res_blocks": 1,
    "channel_mult": "1,1,1",
    "num_head_channels": 32,
    "attention_resolutions": "8",
    "dropout": 0.0,
    "text_ctx": 8,
    "xf_width": 32,
    "xf_layers": 1,
    "xf_heads": 2,
    "n_vocab": 257,
}


def test_byte_tokens_are_the_utf8_bytes_of_the_lower_cased_prompt() -> None:
    tok = ByteTokenizer()
    assert tok.n_vocab == 257 and tok.end_token == 256 and tok.kind == "bytes"
    assert tok.encode("A Red Circle") == list(b"a red circle")
    assert tok.encode("Été") == list("été".encode())  # multi-byte characters: one id per byte
    assert tok.count_tokens("Été") == 5
    assert tok.encode("") == []


def test_byte_batch_pads_with_256_truncates_and_masks_real_tokens() -> None:
    tokens, mask = ByteTokenizer().batch(["ab", "", "abcdefghij"], 4)
    assert tokens.dtype == torch.int64 and mask.dtype == torch.bool
    assert tokens.tolist() == [[97, 98, 256, 256], [256] * 4, [97, 98, 99, 100]]
    assert mask.tolist() == [[True, True, False, False], [False] * 4, [True] * 4]
    assert int(tokens.max()) < ByteTokenizer().n_vocab


def test_byte_tokenizer_rejects_what_is_not_text() -> None:
    with pytest.raises(ValueError, match="prompt must be text"):
        ByteTokenizer().encode(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a single string"):
        ByteTokenizer().batch("abc", 4)


def test_a_folder_with_tokenizer_json_gets_the_byte_tokenizer_with_no_network(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GLIDE_API_OFFLINE", "1")
    monkeypatch.setenv("GLIDE_API_CACHE", str(tmp_path / "empty-cache"))
    ByteTokenizer().save(tmp_path)
    assert json.loads((tmp_path / "tokenizer.json").read_text()) == {"type": "bytes"}
    assert tokenizer_type(tmp_path) == "bytes"
    assert isinstance(
        load_tokenizer(folder=tmp_path, source=WeightsSource.from_env(offline=True)), ByteTokenizer
    )


def test_a_folder_without_a_tokenizer_still_means_gpt2_from_the_cache(tmp_path) -> None:
    assert tokenizer_type(tmp_path) is None
    with pytest.raises(WeightsNotFound, match=r"encoder\.json"):
        load_tokenizer(
            folder=tmp_path, source=WeightsSource.from_env(offline=True, cache=tmp_path / "empty-cache")
        )


def test_an_unknown_tokenizer_type_is_refused_by_name(tmp_path) -> None:
    (tmp_path / "tokenizer.json").write_text('{"type": "sentencepiece"}')
    with pytest.raises(ValueError, match="must be one of gpt2, bytes"):
        load_tokenizer(folder=tmp_path)


def test_model_folder_loads_with_its_byte_tokenizer_and_a_257_entry_embedding(tmp_path) -> None:
    config = ModelConfig.from_options(TINY)
    save_model_folder(tmp_path, config=config, state_dict=create_model(config).state_dict())
    ByteTokenizer().save(tmp_path)
    loaded = load_model(
        str(tmp_path),
        device=torch.device("cpu"),
        precision="fp32",
        source=WeightsSource.from_env(offline=True, cache=tmp_path / "empty-cache"),
    )
    assert isinstance(loaded.tokenizer, ByteTokenizer)
    assert loaded.network.token_embedding.weight.shape == (257, 32)
    assert loaded.describe()["tokenizer"] == "bytes"
    tokens, mask = loaded.tokenizer.batch(["a red circle"], config.text_ctx)
    out = loaded.network(torch.zeros(1, 3, 32, 32), torch.tensor([10]), tokens, mask)
    assert out.shape == (1, 6, 32, 32)


def test_a_tokenizer_that_does_not_fit_the_embedding_is_refused(tmp_path) -> None:
    config = ModelConfig.from_options({**TINY, "n_vocab": 300})
    save_model_folder(tmp_path, config=config, state_dict=create_model(config).state_dict())
    ByteTokenizer().save(tmp_path)
    with pytest.raises(ValueError, match=r"257 tokens but config\.json says n_vocab=300"):
        load_model(
            str(tmp_path),
            device=torch.device("cpu"),
            precision="fp32",
            source=WeightsSource.from_env(offline=True),
        )
