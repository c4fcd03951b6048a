"""The ``corpus`` section: which text the study trains on (`scalinglab.data.corpus` reads it).

`scalinglab.data.corpus.validate_corpus` checks these keys' values, with the files they name, before
anything runs (``own_check``): `from_dict` checks their types only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scalinglab.config.fields import fraction, positive

SOURCES = ("stdlib", "files")


@dataclass(frozen=True)
class CorpusConfig:
    """The ``corpus`` section of the study config."""

    source: str = field(
        default="stdlib",
        metadata={"doc": "stdlib: the interpreter's standard-library .py files; files: `paths`",
                  "choices": SOURCES, "own_check": True},
    )
    paths: tuple[str, ...] = field(
        default=(),
        metadata={"doc": "files, globs (** recurses) or save_to_disk folders for source files; "
                         ".jsonl, .parquet, .arrow or UTF-8 text, text and .jsonl also as .gz, "
                         ".bz2, .xz or .zst", "own_check": True},
    )
    text_field: str = field(
        default="text",
        metadata={"doc": "the field (.jsonl) or column (.parquet, .arrow) holding each "
                         "document's text", "own_check": True},
    )
    max_bytes: int = field(
        default=16_000_000,
        metadata=positive("byte budget of UTF-8 document text taken, in listing order",
                          own_check=True),
    )
    val_fraction: float = field(
        default=0.05,
        metadata=fraction("share of documents held out for validation (split by document, "
                          "seeded)", exclusive_max=True, own_check=True),
    )
