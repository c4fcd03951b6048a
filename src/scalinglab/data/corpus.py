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

import bz2
import codecs
import glob
import gzip
import hashlib
import io
import json
import lzma
import os
import platform
import sys
import sysconfig
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from scalinglab.atomic import atomic_path, write_json
from scalinglab.config.corpus import SOURCES, CorpusConfig
from scalinglab.errors import UserError

_EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages"})
_GLOB_CHARS = frozenset("*?[")
COMPRESSIONS = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz", ".zst": "zstd"}
"""File suffix -> the compression a text or ``.jsonl`` file is read through."""
TABLE_FORMATS = {".parquet": "parquet", ".arrow": "arrow"}
SAMPLE_BYTES = 32 * 1024
"""How much of each text file (decompressed) the check for binary content reads."""
MAX_INVALID_SHARE = 0.01
"""A text file with more invalid UTF-8 than this share of its sample is refused."""
# what a corrupt or truncated compressed file raises while it is read
_DECOMPRESS_ERRORS = (OSError, EOFError, lzma.LZMAError, zlib.error)


@dataclass(frozen=True)
class _Doc:
    name: str
    file: str
    text: str
    n_bytes: int


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path | None = None) -> list[str]:
    """Every ``*.py`` below ``root`` outside site-/dist-packages, as sorted relative posix paths."""
    root = stdlib_root() if root is None else Path(root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _EXCLUDED_DIRS]
        rel_dir = Path(dirpath).relative_to(root)
        found.extend((rel_dir / f).as_posix() for f in filenames if f.endswith(".py"))
    return sorted(found)


def expand_paths(paths: Sequence[str]) -> list[str]:
    """The files named by ``paths`` in order (each glob's matches sorted), without repeats."""
    if isinstance(paths, str):
        raise UserError(f"corpus.paths must be a list of files or globs, not the string {paths!r}")
    out: dict[str, None] = {}
    for pattern in paths:
        expanded = os.path.expanduser(str(pattern))
        if _GLOB_CHARS & set(expanded):
            matches = [m for m in sorted(glob.glob(expanded, recursive=True)) if os.path.isfile(m)]
            if not matches:
                raise UserError(f"corpus.paths: {pattern!r} matches no file")
        elif os.path.isdir(expanded):
            matches = saved_dataset_files(expanded, pattern)
        elif not os.path.isfile(expanded):
            raise UserError(f"corpus.paths: {pattern!r} does not exist")
        else:
            matches = [expanded]
        out.update(dict.fromkeys(matches))
    return list(out)


def saved_dataset_files(folder: str, pattern: str) -> list[str]:
    """The ``data-*.arrow`` files of a Hugging Face ``save_to_disk`` folder, in its order."""
    root = Path(folder)
    if (root / "dataset_dict.json").is_file():
        try:
            splits = json.loads((root / "dataset_dict.json").read_text())["splits"]
        except (ValueError, KeyError, TypeError):
            splits = []
        example = f"{pattern}/{splits[0]}" if splits else f"{pattern}/train"
        raise UserError(
            f"corpus.paths: {pattern!r} holds a dataset with several splits "
            f"({', '.join(map(str, splits)) or 'unknown'}); name one, e.g. {example!r}"
        )
    state = root / "state.json"
    if not state.is_file() and not (root / "dataset_info.json").is_file():
        raise UserError(
            f"corpus.paths: {pattern!r} is a directory (not a save_to_disk dataset: no "
            f"state.json); give a glob such as '{pattern}/**/*.txt'"
        )
    if state.is_file():
        try:
            names = [entry["filename"] for entry in json.loads(state.read_text())["_data_files"]]
        except (ValueError, KeyError, TypeError):
            raise UserError(f"corpus.paths: {state}: not a save_to_disk state.json "
                            "(no _data_files list)") from None
    else:
        names = sorted(p.name for p in root.glob("data-*.arrow"))
    files = [str(root / name) for name in names]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise UserError(f"corpus.paths: {missing[0]} (listed in {state}) does not exist")
    if not files:
        raise UserError(f"corpus.paths: {pattern!r} has no data-*.arrow file")
    return files


def file_format(path: str) -> tuple[str, str | None]:
    """(format, compression) from the name: ``jsonl``, ``parquet``, ``arrow`` or ``text``, and
    ``gzip``, ``bzip2``, ``xz``, ``zstd`` or None (``d.jsonl.gz`` is gzip-compressed jsonl)."""
    name = Path(path).name.lower()
    suffix = Path(name).suffix
    compression = COMPRESSIONS.get(suffix)
    if compression is not None:
        suffix = Path(name[: -len(suffix)]).suffix
    if suffix == ".jsonl":
        return "jsonl", compression
    if suffix in TABLE_FORMATS:
        if compression is not None:
            raise UserError(
                f"{path}: a compressed {suffix} file cannot be read; decompress it "
                f"({suffix} files compress their columns themselves)"
            )
        return TABLE_FORMATS[suffix], None
    return "text", compression


def open_binary(path: str, compression: str | None) -> io.BufferedIOBase:
    """`path` opened for reading bytes, decompressed."""
    if compression == "gzip":
        return gzip.open(path, "rb")
    if compression == "bzip2":
        return bz2.open(path, "rb")
    if compression == "xz":
        return lzma.open(path, "rb")
    if compression == "zstd":  # Python 3.11 has no zstd; pyarrow (a dependency) has
        import pyarrow as pa

        return io.BufferedReader(pa.input_stream(path, compression="zstd"))
    return open(path, "rb")


def _read(path: str, compression: str | None, size: int = -1) -> bytes:
    """The first `size` bytes (all: -1) of `path`, decompressed; a broken file is a UserError."""
    try:
        with open_binary(path, compression) as fh:
            return fh.read(size)
    except _DECOMPRESS_ERRORS as err:
        raise _unreadable(path, compression, err) from None


def _unreadable(path: str, compression: str | None, err: BaseException) -> UserError:
    what = f"a readable {compression} file" if compression else "readable"
    return UserError(f"{path}: not {what} ({str(err) or type(err).__name__})")


def check_text(path: str, sample: bytes, compression: str | None = None) -> None:
    """Refuse `path` unless `sample` (its first bytes, decompressed) looks like UTF-8 text."""
    where = f"first {len(sample)} bytes" + (" decompressed" if compression else "")
    hint = ("corpus.paths takes UTF-8 text and .jsonl files (plain, .gz, .bz2, .xz or .zst), "
            ".parquet and .arrow files")
    if b"\0" in sample:
        raise UserError(f"{path}: not a UTF-8 text file (a NUL byte in its {where}); {hint}")
    # one lone surrogate per invalid byte; a character cut by the sample's end is not invalid
    decoded = codecs.getincrementaldecoder("utf-8")("surrogateescape").decode(
        sample, final=len(sample) < SAMPLE_BYTES
    )
    invalid = sum(1 for ch in decoded if "\udc80" <= ch <= "\udcff")
    if invalid > MAX_INVALID_SHARE * len(sample):
        raise UserError(
            f"{path}: not a UTF-8 text file ({invalid} of its {where} are not valid UTF-8, "
            f"more than {MAX_INVALID_SHARE:.0%}); convert it to UTF-8 first "
            "(e.g. iconv -f latin1 -t utf-8), or leave it out"
        )


def _check_file(path: str, field: str) -> None:
    """The cheap part of reading `path`: a text sample, or a table's schema."""
    fmt, compression = file_format(path)
    if fmt == "parquet":
        _parquet_file(path, field)
    elif fmt == "arrow":
        with _arrow_batches(path, field):
            pass
    else:
        check_text(path, _read(path, compression, SAMPLE_BYTES), compression)


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
        _check_file(path, cfg.text_field)


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _clean(text: str) -> str:
    # JSON may carry lone surrogates ("\ud800"), which cannot be written as UTF-8.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", errors="replace").decode("utf-8")
    return text


def _iter_stdlib() -> Iterator[tuple[str, str, str]]:
    root = stdlib_root()
    for rel in stdlib_files(root):
        yield rel, rel, _decode((root / rel).read_bytes())


def _iter_jsonl(path: str, field: str, compression: str | None) -> Iterator[tuple[str, str, str]]:
    with open_binary(path, compression) as fh:
        for lineno, raw in enumerate(_lines(fh, path, compression), start=1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(_decode(raw))
            except json.JSONDecodeError as err:
                raise UserError(f"{where}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict) or field not in row:
                raise UserError(f"{where}: no field {field!r} (corpus.text_field)")
            text = row[field]
            if text is None:
                continue
            if not isinstance(text, str):
                raise UserError(
                    f"{where}: field {field!r} (corpus.text_field) is "
                    f"{type(text).__name__}, not a string"
                )
            yield where, path, _clean(text)


def _lines(fh, path: str, compression: str | None) -> Iterator[bytes]:
    try:
        yield from fh
    except _DECOMPRESS_ERRORS as err:
        raise _unreadable(path, compression, err) from None


def _check_text_column(path: str, schema, field: str) -> None:
    import pyarrow as pa

    if field not in schema.names:
        raise UserError(
            f"{path}: no column {field!r} (corpus.text_field); "
            f"columns are {', '.join(schema.names)}"
        )
    kind = schema.field(field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)
            or pa.types.is_string_view(kind)):
        raise UserError(f"{path}: column {field!r} (corpus.text_field) has type {kind}, not string")


def _rows(path: str, batches, field: str) -> Iterator[tuple[str, str, str]]:
    row = 0
    for batch in batches:
        for text in batch.column(field).to_pylist():
            if text is not None:
                yield f"{path}:{row}", path, text
            row += 1


def _parquet_file(path: str, field: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise UserError(f"{path}: not a readable parquet file ({err})") from None
    _check_text_column(path, pf.schema_arrow, field)
    return pf


def _iter_parquet(path: str, field: str) -> Iterator[tuple[str, str, str]]:
    pf = _parquet_file(path, field)
    yield from _rows(path, pf.iter_batches(columns=[field], batch_size=4096), field)


@contextmanager
def _arrow_batches(path: str, field: str) -> Iterator[Iterator]:
    """The record batches of an Arrow IPC file, in the file format (random access, "ARROW1"
    magic) or the stream format (what ``save_to_disk`` writes), once its column is checked."""
    import pyarrow as pa

    try:
        source = pa.memory_map(path)
    except (pa.ArrowException, OSError) as err:
        raise UserError(f"{path}: not a readable arrow file ({err})") from None
    with source:
        try:
            try:
                reader = pa.ipc.open_file(source)
                batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
            except pa.ArrowInvalid:
                source.seek(0)
                reader = pa.ipc.open_stream(source)
                batches = iter(reader)
        except (pa.ArrowException, OSError) as err:
            raise UserError(f"{path}: not a readable arrow file (neither the IPC file nor the "
                            f"stream format: {err})") from None
        _check_text_column(path, reader.schema, field)
        yield batches


def _iter_arrow(path: str, field: str) -> Iterator[tuple[str, str, str]]:
    import pyarrow as pa

    with _arrow_batches(path, field) as batches:
        try:
            yield from _rows(path, batches, field)
        except (pa.ArrowInvalid, OSError) as err:  # a truncated or damaged stream
            raise UserError(f"{path}: not a readable arrow file ({err})") from None


def _iter_files(files: Sequence[str], field: str) -> Iterator[tuple[str, str, str]]:
    for path in files:
        fmt, compression = file_format(path)
        if fmt == "jsonl":
            yield from _iter_jsonl(path, field, compression)
        elif fmt == "parquet":
            yield from _iter_parquet(path, field)
        elif fmt == "arrow":
            yield from _iter_arrow(path, field)
        else:
            yield path, path, _decode(_read(path, compression))


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
        raw = _iter_stdlib()
    else:
        raw = _iter_files(expand_paths(cfg.paths), cfg.text_field)
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
