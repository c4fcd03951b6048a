"""Byte-level BPE (HF ``tokenizers``) and the flat token files the trainer reads.

The tokenizer is GPT-2's byte-level BPE (Radford et al. 2019): text is mapped to bytes first, so
every string round-trips and no character is unknown. Its vocabulary is the special token
``<|endoftext|>`` (id 0), the 256 byte symbols, then merges learned on the training split only.

``encode_corpus`` writes each split as one flat array of token ids, every document followed by
``<|endoftext|>``, in ``uint16`` when the ids fit and ``uint32`` otherwise, plus ``meta.json``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from scalinglab.atomic import atomic_path, write_json
from scalinglab.config.tokenizer import EOT, MIN_VOCAB, SPECIAL_TOKENS
from scalinglab.data.corpus import read_documents
from scalinglab.errors import UserError

# Below 2**32, as the study check has it (a uint32 file could hold one more id; no one needs it).
MAX_VOCAB = 2**32 - 1
_BATCH_DOCS = 128


def check_vocab_size(vocab_size: int) -> None:
    """Raise `UserError` naming ``tokenizer.vocab_size`` unless a token file can hold it."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int | np.integer):
        raise UserError(f"tokenizer.vocab_size must be an integer, not {vocab_size!r}")
    if vocab_size < MIN_VOCAB:
        raise UserError(
            f"tokenizer.vocab_size={vocab_size} is too small: byte-level BPE needs the 256 "
            f"bytes plus {len(SPECIAL_TOKENS)} special token(s), at least {MIN_VOCAB}"
        )
    if vocab_size > MAX_VOCAB:
        raise UserError(
            f"tokenizer.vocab_size={vocab_size} does not fit the uint32 token file "
            f"(at most {MAX_VOCAB})"
        )


def token_dtype(vocab_size: int) -> np.dtype:
    """``uint16`` when every id (< vocab_size) fits, else ``uint32``; `UserError` from 2**32."""
    check_vocab_size(vocab_size)
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def _batches(jsonl: Path, size: int = _BATCH_DOCS) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in read_documents(jsonl):
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def train_tokenizer(train_jsonl: Path, vocab_size: int, out_path: Path) -> None:
    """Train byte-level BPE with ``vocab_size`` entries on ``train_jsonl``; save tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    check_vocab_size(vocab_size)
    train_jsonl = Path(train_jsonl)
    if not train_jsonl.is_file():
        raise UserError(f"{train_jsonl}: no such corpus split (run data prepare first)")
    tok = Tokenizer(models.BPE())
    # add_prefix_space=False keeps decode(encode(text)) == text exactly.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        # All 256 bytes, seen or not, so any later text encodes without unknown tokens.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=sys.stderr.isatty(),
    )
    tok.train_from_iterator(_batches(train_jsonl), trainer=trainer)
    with atomic_path(out_path) as tmp:
        tok.save(str(tmp))


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _encode_split(tok, jsonl: Path, target: Path, dtype: np.dtype, eot_id: int) -> dict:
    """Stream ``jsonl`` into ``target`` batch by batch; return counts and the file's sha256."""
    digest = hashlib.sha256()
    n_tokens = n_docs = n_bytes = 0
    bar = tqdm(desc=f"encode {jsonl.stem}", unit="doc", file=sys.stderr, mininterval=1.0)
    with bar, atomic_path(target) as tmp, open(tmp, "wb") as fh:
        for batch in _batches(jsonl):
            # encode_batch_fast skips offset tracking, which the token file never needs.
            encodings = tok.encode_batch_fast(batch, add_special_tokens=False)
            ids = [e.ids + [eot_id] for e in encodings]
            count = sum(len(x) for x in ids)
            flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype, count=count)
            data = flat.tobytes()
            fh.write(data)
            digest.update(data)
            n_tokens += flat.size
            n_docs += len(batch)
            n_bytes += sum(len(t.encode("utf-8")) for t in batch)
            bar.update(len(batch))
    return {"tokens": n_tokens, "documents": n_docs, "bytes": n_bytes, "sha256": digest.hexdigest()}


def load_tokenizer(tokenizer_path: Path):
    """The saved tokenizer, set so that ``decode(encode(text)) == text`` for every string."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    # A document that spells "<|endoftext|>" is encoded as ordinary bytes, so the only
    # end-of-text ids in a token file are the separators. tokenizer.json does not store this flag.
    tok.encode_special_tokens = True
    return tok


def encode_corpus(tokenizer_path: Path, corpus_dir: Path, out_dir: Path) -> dict:
    """Write ``train.bin``, ``val.bin`` and ``meta.json`` under ``out_dir``; return the meta."""
    tokenizer_path, corpus_dir, out_dir = Path(tokenizer_path), Path(corpus_dir), Path(out_dir)
    for needed in (tokenizer_path, corpus_dir / "train.jsonl", corpus_dir / "val.jsonl"):
        if not needed.is_file():
            raise UserError(f"{needed}: no such file")
    tok = load_tokenizer(tokenizer_path)
    eot_id = tok.token_to_id(EOT)
    if eot_id is None:
        raise UserError(f"{tokenizer_path}: has no {EOT} token")
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    dtype = token_dtype(vocab_size)
    splits = {
        name: _encode_split(
            tok, corpus_dir / f"{name}.jsonl", out_dir / f"{name}.bin", dtype, eot_id
        )
        for name in ("train", "val")
    }
    manifest_path = corpus_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    text_tokens = sum(s["tokens"] - s["documents"] for s in splits.values())
    meta = {
        "vocab_size": vocab_size,
        "dtype": dtype.name,
        "eot_id": eot_id,
        "eot_token": EOT,
        "train_tokens": splits["train"]["tokens"],
        "val_tokens": splits["val"]["tokens"],
        "train_documents": splits["train"]["documents"],
        "val_documents": splits["val"]["documents"],
        # UTF-8 bytes of text per token, end-of-text separators not counted.
        "bytes_per_token": sum(s["bytes"] for s in splits.values()) / max(text_tokens, 1),
        "sha256": {name: s["sha256"] for name, s in splits.items()},
        "tokenizer_sha256": _sha256_file(tokenizer_path),
        "corpus_sha256": manifest.get("sha256"),
        "manifest_sha256": _sha256_file(manifest_path) if manifest_path.is_file() else None,
    }
    write_json(out_dir / "meta.json", meta)
    return meta
