"""Text tokenizers for GLIDE text encoders: GPT-2 BPE (the official models) and UTF-8 bytes (small models).

The reference lower-cases the prompt, adds no special tokens, truncates to `text_ctx` and pads with
the end token (50256); the mask marks the real tokens (SPEC §7). tiktoken with the same merges and
the GPT-2 split pattern gives identical ids, provided we lower-case ourselves and never treat
"<|endoftext|>" in a prompt as special.

A model folder may carry its own tokenizer: ``tokenizer.json`` holding ``{"type": "bytes"}`` (the
UTF-8 bytes of the lower-cased prompt, ids 0-255, end/pad id 256: 257 entries, so a small model
needs neither the 50,257-entry vocabulary nor the network) or ``{"type": "gpt2"}``; or the GPT-2
files ``encoder.json`` + ``vocab.bpe`` themselves. A folder with none of these uses the GPT-2 files
from the cache. The model's token embedding is sized by ``n_vocab`` in its ``config.json``.
"""

from __future__ import annotations

import json
import shutil
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from glide_api.errors import InvalidParameter, WeightsNotFound

if TYPE_CHECKING:
    from glide_api.models.weights_source import WeightsSource

# The GPT-2 pre-tokenisation split (contractions, letters, digits, other, whitespace), as shipped
# with tiktoken's gpt2 encoding.
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
GPT2_END_TOKEN = 50256
BYTE_END_TOKEN = 256
TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_TYPES = ("gpt2", "bytes")


class Tokenizer(ABC):
    """Prompt text -> padded token ids and mask. Subclasses define `encode`, `n_vocab`, `save` and `kind`."""

    kind: str
    end_token: int

    @property
    @abstractmethod
    def n_vocab(self) -> int: ...

    @abstractmethod
    def encode(self, prompt: str) -> list[int]: ...

    def padded_tokens_and_mask(self, ids: Sequence[int], text_ctx: int) -> tuple[list[int], list[bool]]:
        """Truncate to `text_ctx`, pad with the end token; mask is True for real tokens."""
        ids = list(ids)[:text_ctx]
        padding = text_ctx - len(ids)
        return ids + [self.end_token] * padding, [True] * len(ids) + [False] * padding

    def batch(self, prompts: Sequence[str], text_ctx: int) -> tuple[Tensor, Tensor]:
        """int64 tokens [B, text_ctx] and bool mask [B, text_ctx]; "" gives the unconditional row."""
        if isinstance(prompts, str):
            raise InvalidParameter("prompts must be a sequence of strings, not a single string")
        rows = [self.padded_tokens_and_mask(self.encode(p), text_ctx) for p in prompts]
        tokens = torch.tensor([r[0] for r in rows], dtype=torch.int64).reshape(len(rows), text_ctx)
        mask = torch.tensor([r[1] for r in rows], dtype=torch.bool).reshape(len(rows), text_ctx)
        return tokens, mask

    def count_tokens(self, prompt: str) -> int:
        """How many tokens a prompt has before truncation (to warn about long prompts)."""
        return len(self.encode(prompt))

    @abstractmethod
    def save(self, folder: str | Path) -> None:
        """Write the files that make `load_tokenizer(folder=folder)` return this tokenizer."""

    @staticmethod
    def _check_prompt(prompt: object) -> str:
        if not isinstance(prompt, str):
            raise InvalidParameter(f"prompt must be text (str), got {type(prompt).__name__}")
        return prompt


class GlideTokenizer(Tokenizer):
    """GPT-2 byte-level BPE, as the official GLIDE models were trained with."""

    kind = "gpt2"

    def __init__(
        self, encoding: object, *, end_token: int = GPT2_END_TOKEN, files: tuple[Path, Path] | None = None
    ) -> None:
        self._encoding = encoding
        self.end_token = end_token
        self.files = files  # (encoder.json, vocab.bpe) it was built from, if known

    @classmethod
    def from_files(cls, encoder_json: str | Path, vocab_bpe: str | Path) -> GlideTokenizer:
        """Build the GPT-2 BPE from `encoder.json` and `vocab.bpe` (no network access)."""
        import tiktoken
        from tiktoken.load import data_gym_to_mergeable_bpe_ranks

        for path in (encoder_json, vocab_bpe):
            if not Path(path).is_file():
                raise WeightsNotFound(f"tokenizer file not found: {path}")
        ranks = data_gym_to_mergeable_bpe_ranks(str(vocab_bpe), str(encoder_json))
        encoding = tiktoken.Encoding(
            name="glide-gpt2",
            pat_str=GPT2_SPLIT_PATTERN,
            mergeable_ranks=ranks,
            special_tokens={"<|endoftext|>": GPT2_END_TOKEN},
        )
        return cls(encoding, files=(Path(encoder_json), Path(vocab_bpe)))

    @property
    def n_vocab(self) -> int:
        return self._encoding.n_vocab

    def encode(self, prompt: str) -> list[int]:
        """Token ids of the lower-cased prompt; no special tokens, no end token appended."""
        return self._encoding.encode_ordinary(self._check_prompt(prompt).lower())

    def save(self, folder: str | Path) -> None:
        """Copy encoder.json and vocab.bpe into `folder` (a folder with both uses them)."""
        if self.files is None:
            raise InvalidParameter("this GPT-2 tokenizer was not built from files; it cannot be saved")
        for source in self.files:
            target = Path(folder) / source.name
            if source.resolve() != target.resolve():
                shutil.copyfile(source, target)


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes of the lower-cased prompt: ids 0-255, end/pad id 256 (n_vocab 257)."""

    kind = "bytes"
    end_token = BYTE_END_TOKEN

    @property
    def n_vocab(self) -> int:
        return BYTE_END_TOKEN + 1

    def encode(self, prompt: str) -> list[int]:
        return list(self._check_prompt(prompt).lower().encode("utf-8"))

    def save(self, folder: str | Path) -> None:
        text = json.dumps({"type": self.kind}, indent=2) + "\n"
        (Path(folder) / TOKENIZER_JSON).write_text(text, encoding="utf-8")


def tokenizer_type(folder: str | Path) -> str | None:
    """The `type` a folder's tokenizer.json names ("gpt2" or "bytes"), None without one."""
    path = Path(folder) / TOKENIZER_JSON
    if not path.is_file():
        return None
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InvalidParameter(f"{path}: not valid JSON ({e})") from None
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind not in TOKENIZER_TYPES:
        raise InvalidParameter(f'{path}: "type" must be one of {", ".join(TOKENIZER_TYPES)} (got {kind!r})')
    return kind


def gpt2_files_in(folder: str | Path) -> tuple[Path, Path] | None:
    """A folder's own GPT-2 files ``(encoder.json, vocab.bpe)``, None when it holds neither.

    A folder holding only one of the two raises `WeightsNotFound`: silently pairing it with the
    official other half would garble every prompt.
    """
    encoder_json, vocab_bpe = Path(folder) / "encoder.json", Path(folder) / "vocab.bpe"
    if encoder_json.is_file() and vocab_bpe.is_file():
        return encoder_json, vocab_bpe
    if encoder_json.is_file() or vocab_bpe.is_file():
        missing = vocab_bpe if encoder_json.is_file() else encoder_json
        raise WeightsNotFound(f"{folder} holds half a tokenizer: {missing.name} is missing")
    return None


def load_tokenizer(*, folder: str | Path | None = None, source: WeightsSource | None = None) -> Tokenizer:
    """The tokenizer a model folder names (see the module docstring), else GPT-2 from the cache.

    GPT-2 comes from `folder` when it holds encoder.json and vocab.bpe, else from `source`'s cache
    (default: `WeightsSource.from_env()`; downloaded once unless offline). A byte tokenizer needs
    no files and no network.
    """
    from glide_api.models.official_files import tokenizer_files
    from glide_api.models.weights_source import WeightsSource

    if folder is not None and tokenizer_type(folder) == "bytes":
        return ByteTokenizer()
    files = gpt2_files_in(folder) if folder is not None else None
    if files is None:
        files = tokenizer_files(source=source or WeightsSource.from_env())
    return GlideTokenizer.from_files(*files)
