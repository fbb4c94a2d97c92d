"""GLIDE's text tokenizer: GPT-2 byte-level BPE through tiktoken, from local files (SPEC §7).

The reference lower-cases the prompt, adds no special tokens, truncates to `text_ctx` and pads with
the end token (50256); the mask marks the real tokens. tiktoken with the same merges and the GPT-2
split pattern gives identical ids, provided we lower-case ourselves and never treat
"<|endoftext|>" in a prompt as special.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

# The GPT-2 pre-tokenisation split (contractions, letters, digits, other, whitespace), as shipped
# with tiktoken's gpt2 encoding.
GPT2_SPLIT_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)
GPT2_END_TOKEN = 50256


class GlideTokenizer:
    """Prompt text -> padded token ids and mask for a GLIDE text encoder."""

    def __init__(self, encoding: object, *, end_token: int = GPT2_END_TOKEN) -> None:
        self._encoding = encoding
        self.end_token = end_token

    @classmethod
    def from_files(cls, encoder_json: str | Path, vocab_bpe: str | Path) -> GlideTokenizer:
        """Build the GPT-2 BPE from `encoder.json` and `vocab.bpe` (no network access)."""
        import tiktoken
        from tiktoken.load import data_gym_to_mergeable_bpe_ranks

        for path in (encoder_json, vocab_bpe):
            if not Path(path).is_file():
                raise FileNotFoundError(f"tokenizer file not found: {path}")
        ranks = data_gym_to_mergeable_bpe_ranks(str(vocab_bpe), str(encoder_json))
        encoding = tiktoken.Encoding(
            name="glide-gpt2",
            pat_str=GPT2_SPLIT_PATTERN,
            mergeable_ranks=ranks,
            special_tokens={"<|endoftext|>": GPT2_END_TOKEN},
        )
        return cls(encoding)

    @property
    def n_vocab(self) -> int:
        return self._encoding.n_vocab

    def encode(self, prompt: str) -> list[int]:
        """Token ids of the lower-cased prompt; no special tokens, no end token appended."""
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be text (str), got {type(prompt).__name__}")
        return self._encoding.encode_ordinary(prompt.lower())

    def padded_tokens_and_mask(self, ids: Sequence[int], text_ctx: int) -> tuple[list[int], list[bool]]:
        """Truncate to `text_ctx`, pad with the end token; mask is True for real tokens."""
        ids = list(ids)[:text_ctx]
        padding = text_ctx - len(ids)
        return ids + [self.end_token] * padding, [True] * len(ids) + [False] * padding

    def batch(self, prompts: Sequence[str], text_ctx: int) -> tuple[Tensor, Tensor]:
        """int64 tokens [B, text_ctx] and bool mask [B, text_ctx]; "" gives the unconditional row."""
        if isinstance(prompts, str):
            raise ValueError("prompts must be a sequence of strings, not a single string")
        rows = [self.padded_tokens_and_mask(self.encode(p), text_ctx) for p in prompts]
        tokens = torch.tensor([r[0] for r in rows], dtype=torch.int64).reshape(len(rows), text_ctx)
        mask = torch.tensor([r[1] for r in rows], dtype=torch.bool).reshape(len(rows), text_ctx)
        return tokens, mask

    def count_tokens(self, prompt: str) -> int:
        """How many tokens a prompt has before truncation (to warn about long prompts)."""
        return len(self.encode(prompt))


def load_tokenizer(*, folder: str | Path | None = None, offline: bool = False,
                   cache: str | Path | None = None) -> GlideTokenizer:
    """The GPT-2 tokenizer from `folder` when it holds the files, else from the cache (downloaded once)."""
    from .hub import tokenizer_files

    encoder_json, vocab_bpe = tokenizer_files(folder=folder, offline=offline, cache=cache)
    return GlideTokenizer.from_files(encoder_json, vocab_bpe)
