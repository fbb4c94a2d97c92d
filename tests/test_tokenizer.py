"""The GPT-2 BPE tokenizer against the reference's cases (SPEC §7)."""

from __future__ import annotations

import pytest
from golden import golden_json, write_tokenizer_files

from glide_api.models.tokenizer import GlideTokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> GlideTokenizer:
    return GlideTokenizer.from_files(*write_tokenizer_files(tmp_path_factory.mktemp("tokenizer")))


def test_vocabulary_is_gpt2_with_end_token(tokenizer) -> None:
    spec = golden_json()["tokenizer"]
    assert tokenizer.n_vocab == spec["n_vocab"] == 50257
    assert tokenizer.end_token == spec["end_token"]


def test_padded_tokens_and_mask_match_reference_cases(tokenizer) -> None:
    spec = golden_json()["tokenizer"]
    for case in spec["cases"]:
        tokens, mask = tokenizer.batch([case["prompt"]], spec["text_ctx"])
        assert tokens[0].tolist() == case["tokens"], case["prompt"]
        assert mask[0].tolist() == case["mask"], case["prompt"]
        assert int(mask.sum()) == case["n_real"]


def test_known_prompt_encodes_to_spec_ids(tokenizer) -> None:
    assert tokenizer.encode("an oil painting of a corgi") == [272, 3056, 12036, 286, 257, 1162, 12397]
    assert tokenizer.encode("An OIL Painting of a CORGI") == tokenizer.encode("an oil painting of a corgi")


def test_end_of_text_in_a_prompt_is_plain_text(tokenizer) -> None:
    assert tokenizer.encode("<|endoftext|>") == [27, 91, 437, 1659, 5239, 91, 29]


def test_empty_prompt_is_all_padding(tokenizer) -> None:
    tokens, mask = tokenizer.batch([""], 128)
    assert tokens.tolist() == [[50256] * 128]
    assert not mask.any()


def test_long_prompt_is_truncated_to_context(tokenizer) -> None:
    tokens, mask = tokenizer.batch(["corgi " * 300], 128)
    assert tokens.shape == (1, 128) and bool(mask.all())
    assert tokenizer.count_tokens("corgi " * 300) > 128


@pytest.mark.parametrize("bad", [None, 3, b"bytes"])
def test_non_text_prompt_is_a_value_error(tokenizer, bad) -> None:
    with pytest.raises(ValueError, match="prompt must be text"):
        tokenizer.encode(bad)


def test_single_string_instead_of_list_is_rejected(tokenizer) -> None:
    with pytest.raises(ValueError, match="sequence of strings"):
        tokenizer.batch("a corgi", 128)
