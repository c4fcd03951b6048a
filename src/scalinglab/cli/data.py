"""`scalinglab data prepare|tokenizer|encode`: the corpus, its tokenizer and the token files.

The work is done by `scalinglab.data.corpus` and `scalinglab.data.tokenizer` (the tokenizers
library is imported inside their functions).
"""

from __future__ import annotations

from pathlib import Path

from scalinglab.cli import grammar
from scalinglab.cli.io import study_config
from scalinglab.data.corpus import prepare_corpus, validate_corpus
from scalinglab.data.tokenizer import encode_corpus, train_tokenizer


def _prepare(args) -> None:
    cfg = study_config(args.config)
    validate_corpus(cfg.corpus)
    prepare_corpus(cfg.corpus, cfg.seed, Path(args.out_dir))


def _tokenizer(args) -> None:
    train_tokenizer(Path(args.corpus_dir) / "train.jsonl", args.vocab_size, Path(args.out))


def _encode(args) -> None:
    encode_corpus(Path(args.tokenizer), Path(args.corpus_dir), Path(args.out_dir))


def register(sub) -> None:
    """Add `data VERB` to the `scalinglab` parser's subparsers."""
    data = grammar.group(sub, "data", "the corpus, its tokenizer and the token files")

    p = grammar.verb(data, "prepare", _prepare,
                     "collect the corpus's documents and split train/val by document")
    grammar.add_config(p, help="the corpus spec resolved by the workflow "
                       "(results/specs/corpus.json)")
    p.add_argument("--out-dir", required=True,
                   help="folder to write train.jsonl, val.jsonl and manifest.json to")

    p = grammar.verb(data, "tokenizer", _tokenizer,
                     "train a byte-level BPE tokenizer on the training split")
    p.add_argument("--corpus-dir", required=True, help="folder with train.jsonl (data prepare)")
    p.add_argument("--vocab-size", type=int, required=True,
                   help="entries of the vocabulary, the 256 bytes and <|endoftext|> included")
    p.add_argument("--out", required=True, help="tokenizer.json to write")

    p = grammar.verb(data, "encode", _encode, "encode both splits into flat token files")
    p.add_argument("--tokenizer", required=True, help="tokenizer.json (data tokenizer)")
    p.add_argument("--corpus-dir", required=True,
                   help="folder with train.jsonl and val.jsonl (data prepare)")
    p.add_argument("--out-dir", required=True,
                   help="folder to write train.bin, val.bin and meta.json to")
