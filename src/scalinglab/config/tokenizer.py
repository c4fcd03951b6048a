"""The ``tokenizer`` section, and the vocabulary layout its bound comes from."""

from __future__ import annotations

from dataclasses import dataclass, field

EOT = "<|endoftext|>"
SPECIAL_TOKENS = (EOT,)
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)
"""Byte-level BPE needs the 256 byte symbols and the special tokens before any merge."""


@dataclass(frozen=True)
class TokenizerConfig:
    vocab_size: int = field(
        default=2048,
        metadata={"doc": "byte-level BPE vocabulary size, at least 257 (the 256 byte tokens and "
                         "`<|endoftext|>`; uint16 token file up to 65536, else uint32)",
                  "min": MIN_VOCAB,
                  "why": "byte-level BPE needs the 256 byte tokens and <|endoftext|>"},
    )
