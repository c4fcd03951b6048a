"""Reading a corpus's sources: listing files and globs (and `save_to_disk` folders), each
file's format and compression, the text check, and the documents of every format (text, jsonl,
parquet, arrow; gz, bz2, xz, zst). `corpus` turns them into the study's split."""

from __future__ import annotations

import bz2
import codecs
import glob
import gzip
import io
import json
import lzma
import os
import sysconfig
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

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


def check_file(path: str, field: str) -> None:
    """The cheap part of reading `path`: a text sample, or a table's schema."""
    fmt, compression = file_format(path)
    if fmt == "parquet":
        _parquet_file(path, field)
    elif fmt == "arrow":
        with _arrow_batches(path, field):
            pass
    else:
        check_text(path, _read(path, compression, SAMPLE_BYTES), compression)


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _clean(text: str) -> str:
    # JSON may carry lone surrogates ("\ud800"), which cannot be written as UTF-8.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", errors="replace").decode("utf-8")
    return text


def iter_stdlib() -> Iterator[tuple[str, str, str]]:
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


def iter_files(files: Sequence[str], field: str) -> Iterator[tuple[str, str, str]]:
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
