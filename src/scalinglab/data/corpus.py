"""The text a study trains on: listed, cut to a byte budget, split by document, recorded.

Two sources:

- ``stdlib`` (default): the running interpreter's own standard-library ``.py`` files, so the
  default study needs no download. Files are sorted by their path relative to the stdlib root
  (``site-packages`` and ``dist-packages`` excluded) and taken in that order.
- ``files``: the user's files or globs (``**`` recursive). ``.jsonl`` files give one document per
  line (the string field ``text_field``), ``.parquet`` and ``.arrow`` files (Arrow IPC, file or
  stream format) one per row (the string column ``text_field``), any other file is one plain-text
  document. Text and ``.jsonl`` files may be compressed: ``.gz``, ``.bz2``, ``.xz`` or ``.zst``
  (``d.jsonl.gz``), read decompressed. A folder written by Hugging Face ``save_to_disk`` (its
  ``state.json`` names its ``data-*.arrow`` files) may be named as a path: its files, in order.

A file read as text must look like UTF-8 text: one with a NUL byte, or with more than 1% invalid
UTF-8, in its first 32 KiB (decompressed) is refused with its name before anything runs (random
binaries, UTF-16, an image or an archive named ``.txt``, a Latin-1 file: convert it first). The
rare invalid byte below that share is decoded with ``errors="replace"`` (U+FFFD), so the text
written is always valid UTF-8. Empty documents are dropped.

Documents are taken in listing order until ``max_bytes`` UTF-8 bytes of text are reached; the
document that crosses the budget is cut at a character boundary and marked in the manifest.

The validation split is by document: each document gets the key sha256(seed, name) and the
``round(val_fraction * n)`` documents with the smallest keys (at least 1, at most n - 1) are held
out. A document's key does not depend on the listing order, so the split is deterministic by seed.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from scalinglab.atomic import atomic_path, write_json
from scalinglab.config.corpus import SOURCES, CorpusConfig
from scalinglab.data.sources import (
    check_file,
    expand_paths,
    iter_files,
    iter_stdlib,
    stdlib_root,
)
from scalinglab.errors import UserError


@dataclass(frozen=True)
class _Doc:
    name: str
    file: str
    text: str
    n_bytes: int


def validate_corpus(cfg: CorpusConfig) -> None:
    """Cheap checks before anything runs; a bad value raises `UserError` naming its key or file.

    Every listed file is opened: the first `SAMPLE_BYTES` of a text or ``.jsonl`` file
    (decompressed) must look like UTF-8 text, a table must have a string column ``text_field``.
    """
    if cfg.source not in SOURCES:
        raise UserError(f"corpus.source must be one of {', '.join(SOURCES)}, not {cfg.source!r}")
    if isinstance(cfg.max_bytes, bool) or not isinstance(cfg.max_bytes, int) or cfg.max_bytes <= 0:
        raise UserError(f"corpus.max_bytes must be a positive integer, not {cfg.max_bytes!r}")
    if not isinstance(cfg.val_fraction, int | float) or not 0 < cfg.val_fraction < 1:
        raise UserError(
            f"corpus.val_fraction must lie strictly between 0 and 1, not {cfg.val_fraction!r}"
        )
    if not isinstance(cfg.text_field, str) or not cfg.text_field:
        raise UserError(f"corpus.text_field must be a non-empty string, not {cfg.text_field!r}")
    if cfg.source == "stdlib":
        if cfg.paths:
            raise UserError(
                "corpus.paths is set but corpus.source is 'stdlib'; "
                "set corpus.source: files to use them"
            )
        root = stdlib_root()
        if not root.is_dir():
            raise UserError(f"corpus.source: the standard library {str(root)!r} is not a directory")
        return
    if not cfg.paths:
        raise UserError("corpus.paths is empty but corpus.source is 'files'; list files or globs")
    files = expand_paths(cfg.paths)
    if sum(os.path.getsize(f) for f in files) == 0:
        raise UserError(f"corpus.paths: every matched file is empty ({len(files)} files)")
    for path in files:
        check_file(path, cfg.text_field)


def _take(raw: Iterator[tuple[str, str, str]], max_bytes: int) -> tuple[list[_Doc], str | None]:
    """Documents in order until ``max_bytes``; the crossing one is cut at a character boundary."""
    docs: list[_Doc] = []
    cut = None
    total = 0
    bar = tqdm(
        total=max_bytes, unit="B", unit_scale=True, desc="corpus", file=sys.stderr, mininterval=1.0
    )
    with bar:
        for name, file, text in raw:
            data = text.encode("utf-8")
            if not data:
                continue
            room = max_bytes - total
            if len(data) > room:
                # errors="ignore" drops a multi-byte character split by the cut.
                text = data[:room].decode("utf-8", errors="ignore")
                data = text.encode("utf-8")
                cut = name
            if data:
                docs.append(_Doc(name, file, text, len(data)))
                total += len(data)
                bar.update(len(data))
            if cut is not None or total >= max_bytes:
                break
    return docs, cut


def val_mask(names: Sequence[str], seed: int, val_fraction: float) -> list[bool]:
    """Which documents are held out: the ``round(val_fraction * n)`` smallest sha256(seed, name)."""
    n = len(names)
    if n < 2:
        raise UserError(
            f"the corpus has {n} document(s); a train/val split needs at least 2 "
            "(corpus.paths, corpus.max_bytes)"
        )
    n_val = min(n - 1, max(1, round(val_fraction * n)))
    keys = [hashlib.sha256(f"{seed}\0{name}".encode()).hexdigest() for name in names]
    held = set(sorted(range(n), key=keys.__getitem__)[:n_val])
    return [i in held for i in range(n)]


def _write_split(target: Path, docs: Sequence[_Doc]) -> str:
    digest = hashlib.sha256()
    with atomic_path(target) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        for doc in docs:
            fh.write(json.dumps({"name": doc.name, "text": doc.text}, ensure_ascii=False) + "\n")
            digest.update(doc.text.encode("utf-8"))
    return digest.hexdigest()


def prepare_corpus(cfg: CorpusConfig, seed: int, out_dir: Path) -> dict:
    """Write ``train.jsonl``, ``val.jsonl`` and ``manifest.json`` under ``out_dir``; return the
    manifest. Each sha256 is over the UTF-8 text of the documents concatenated in file order
    (``all``: in corpus order, before the split, so it does not depend on the seed)."""
    validate_corpus(cfg)
    out_dir = Path(out_dir)
    if cfg.source == "stdlib":
        raw = iter_stdlib()
    else:
        raw = iter_files(expand_paths(cfg.paths), cfg.text_field)
    docs, cut = _take(raw, cfg.max_bytes)
    if not docs:
        raise UserError("corpus.paths: the corpus has no non-empty document")
    mask = val_mask([d.name for d in docs], seed, cfg.val_fraction)
    train = [d for d, held in zip(docs, mask, strict=True) if not held]
    val = [d for d, held in zip(docs, mask, strict=True) if held]
    overall = hashlib.sha256()
    files: dict[str, dict] = {}
    for doc in docs:
        overall.update(doc.text.encode("utf-8"))
        entry = files.setdefault(doc.file, {"path": doc.file, "bytes": 0, "documents": 0})
        entry["bytes"] += doc.n_bytes
        entry["documents"] += 1
    total = sum(d.n_bytes for d in docs)
    manifest = {
        "source": cfg.source,
        "python_version": platform.python_version() if cfg.source == "stdlib" else None,
        "text_field": cfg.text_field if cfg.source == "files" else None,
        "max_bytes": cfg.max_bytes,
        "val_fraction": cfg.val_fraction,
        "seed": seed,
        "total_bytes": total,
        "truncated_document": cut,
        "n_documents": {"train": len(train), "val": len(val), "all": len(docs)},
        "bytes": {"train": sum(d.n_bytes for d in train), "val": sum(d.n_bytes for d in val)},
        "sha256": {
            "train": _write_split(out_dir / "train.jsonl", train),
            "val": _write_split(out_dir / "val.jsonl", val),
            "all": overall.hexdigest(),
        },
        "files": list(files.values()),
    }
    write_json(out_dir / "manifest.json", manifest)
    return manifest


def read_documents(jsonl: Path) -> Iterator[str]:
    """The texts of a split file written by `prepare_corpus`, in order."""
    with open(jsonl, encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)["text"]
