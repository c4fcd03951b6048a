import bz2
import contextlib
import gzip
import hashlib
import io
import json
import lzma
import os
import platform
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import REPO
from scalinglab.cli import main as cli
from scalinglab.data.corpus import CorpusConfig, prepare_corpus, val_mask, validate_corpus
from scalinglab.data.sources import SAMPLE_BYTES, check_text, stdlib_files
from scalinglab.errors import UserError


def read_split(path):
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def sha(texts):
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
    return digest.hexdigest()


def write_docs(root, n, prefix="doc"):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"{prefix}{i:02d}.txt").write_text(f"document {i}\n" + "abc " * i)


def files_cfg(*paths, **kw):
    return CorpusConfig(source="files", paths=tuple(str(p) for p in paths), **kw)


# --- stdlib -------------------------------------------------------------------------------


def test_stdlib_listing_is_sorted_and_skips_site_packages(tmp_path):
    for rel in [
        "b.py",
        "a/z.py",
        "a/b/c.py",
        "Z.py",
        "notes.txt",
        "site-packages/pkg/m.py",
        "a/dist-packages/n.py",
        "_x/__init__.py",
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    assert stdlib_files(tmp_path) == ["Z.py", "_x/__init__.py", "a/b/c.py", "a/z.py", "b.py"]


def test_real_stdlib_listing_is_deterministic():
    files = stdlib_files()
    assert files == sorted(files) == stdlib_files()
    assert "os.py" in files and "json/__init__.py" in files
    assert not any("site-packages" in f or "dist-packages" in f for f in files)


def test_stdlib_corpus_respects_budget_and_order(tmp_path):
    cfg = CorpusConfig(max_bytes=300_000)
    m = prepare_corpus(cfg, seed=1, out_dir=tmp_path)
    assert m["source"] == "stdlib" and m["python_version"] == platform.python_version()
    # The crossing document is cut at a character boundary: at most 3 bytes short.
    assert 300_000 - 3 <= m["total_bytes"] <= 300_000
    assert m["total_bytes"] == sum(f["bytes"] for f in m["files"])
    listed = [f["path"] for f in m["files"]]
    assert listed == [f for f in stdlib_files() if f in set(listed)]
    assert listed[0] == stdlib_files()[0] and m["truncated_document"] == listed[-1]
    train, val = read_split(tmp_path / "train.jsonl"), read_split(tmp_path / "val.jsonl")
    assert m["n_documents"] == {"train": len(train), "val": len(val), "all": len(listed)}
    assert sum(len(d["text"].encode()) for d in train + val) == m["total_bytes"]
    # "all" is over the corpus order, i.e. the sorted file list.
    by_name = {d["name"]: d["text"] for d in train + val}
    assert m["sha256"]["all"] == sha(by_name[name] for name in listed)
    assert m["sha256"]["train"] == sha(d["text"] for d in train)
    assert m["sha256"]["val"] == sha(d["text"] for d in val)
    assert json.loads((tmp_path / "manifest.json").read_text()) == m


# --- user files ---------------------------------------------------------------------------


def test_recursive_glob_and_plain_files(tmp_path):
    write_docs(tmp_path / "a" / "deep", 3)
    write_docs(tmp_path / "b", 2, prefix="x")
    (tmp_path / "b" / "empty.txt").write_text("")
    cfg = files_cfg(tmp_path / "a/**/*.txt", tmp_path / "b" / "x01.txt", tmp_path / "b/*.txt")
    m = prepare_corpus(cfg, seed=0, out_dir=tmp_path / "out")
    # Each glob's matches sorted, listed files kept where first named, repeats and empty dropped.
    expected = [str(tmp_path / "a/deep" / f"doc{i:02d}.txt") for i in range(3)]
    expected += [str(tmp_path / "b/x01.txt"), str(tmp_path / "b/x00.txt")]
    assert [f["path"] for f in m["files"]] == expected
    assert m["n_documents"]["all"] == 5 and m["truncated_document"] is None


def test_jsonl_rows_are_documents(tmp_path):
    rows = [
        {"content": "first"},
        {"content": "zweite ünïcode ✓"},
        {"content": None},
        {"content": ""},
        {"content": "third"},
    ]
    lines = [json.dumps(r) for r in rows]
    lines.insert(2, "")  # blank lines are skipped
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    m = prepare_corpus(files_cfg(tmp_path / "d.jsonl", text_field="content"), 0, tmp_path / "o")
    docs = read_split(tmp_path / "o/train.jsonl") + read_split(tmp_path / "o/val.jsonl")
    path = str(tmp_path / "d.jsonl")
    assert sorted((d["name"], d["text"]) for d in docs) == sorted(
        [(f"{path}:1", "first"), (f"{path}:2", "zweite ünïcode ✓"), (f"{path}:6", "third")]
    )
    assert m["files"] == [
        {"path": path, "bytes": len("firstzweite ünïcode ✓third".encode()), "documents": 3}
    ]


def test_parquet_rows_are_documents(tmp_path):
    table = pa.table({"body": ["alpha", None, "beta", "gamma"], "n": [1, 2, 3, 4]})
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=2)
    m = prepare_corpus(files_cfg(tmp_path / "d.parquet", text_field="body"), 0, tmp_path / "o")
    docs = read_split(tmp_path / "o/train.jsonl") + read_split(tmp_path / "o/val.jsonl")
    path = str(tmp_path / "d.parquet")
    assert sorted((d["name"], d["text"]) for d in docs) == [
        (f"{path}:0", "alpha"),
        (f"{path}:2", "beta"),
        (f"{path}:3", "gamma"),
    ]
    assert m["total_bytes"] == len("alphabetagamma")


def test_a_stray_invalid_byte_is_replaced_and_budget_cuts_at_a_character(tmp_path):
    # one byte in 108 is not UTF-8: under the 1% that makes a file "not text"
    (tmp_path / "a.txt").write_bytes(b"caf\xe9 ok" + b"." * 100)
    (tmp_path / "b.txt").write_text("ééééé")  # 10 bytes
    a_text = "caf\ufffd ok" + "." * 100
    m = prepare_corpus(
        files_cfg(tmp_path / "*.txt", max_bytes=len(a_text.encode()) + 5), 0, tmp_path / "o"
    )
    docs = {
        d["name"]: d["text"]
        for d in read_split(tmp_path / "o/train.jsonl") + read_split(tmp_path / "o/val.jsonl")
    }
    assert docs[str(tmp_path / "a.txt")] == a_text
    assert docs[str(tmp_path / "b.txt")] == "éé"  # 5 bytes of budget: two whole characters
    assert m["truncated_document"] == str(tmp_path / "b.txt")


# --- the split ----------------------------------------------------------------------------


def test_split_is_deterministic_by_seed(tmp_path):
    write_docs(tmp_path / "d", 40)
    cfg = files_cfg(tmp_path / "d/*.txt", val_fraction=0.25)
    m1 = prepare_corpus(cfg, 7, tmp_path / "s7a")
    m2 = prepare_corpus(cfg, 7, tmp_path / "s7b")
    m3 = prepare_corpus(cfg, 8, tmp_path / "s8")
    for name in ("train.jsonl", "val.jsonl"):
        assert (tmp_path / "s7a" / name).read_bytes() == (tmp_path / "s7b" / name).read_bytes()
    assert m1["sha256"] == m2["sha256"]
    assert m1["n_documents"] == {"train": 30, "val": 10, "all": 40}
    val7 = {d["name"] for d in read_split(tmp_path / "s7a/val.jsonl")}
    val8 = {d["name"] for d in read_split(tmp_path / "s8/val.jsonl")}
    assert val7 != val8
    assert m1["sha256"]["all"] == m3["sha256"]["all"]  # the corpus itself ignores the seed


def test_split_depends_on_the_document_not_its_position(tmp_path):
    write_docs(tmp_path / "d", 20)
    names = sorted(str(p) for p in (tmp_path / "d").glob("*.txt"))
    forward = prepare_corpus(files_cfg(*names), 3, tmp_path / "f")
    backward = prepare_corpus(files_cfg(*reversed(names)), 3, tmp_path / "b")
    val_f = [d["name"] for d in read_split(tmp_path / "f/val.jsonl")]
    val_b = [d["name"] for d in read_split(tmp_path / "b/val.jsonl")]
    assert set(val_f) == set(val_b) and val_b == val_f[::-1]
    assert forward["sha256"]["all"] != backward["sha256"]["all"]


@pytest.mark.parametrize(
    ("n", "fraction", "n_val"),
    [(2, 0.05, 1), (2, 0.9, 1), (10, 0.05, 1), (100, 0.05, 5), (10, 0.5, 5), (10, 0.99, 9)],
)
def test_val_share_has_one_document_each_side(n, fraction, n_val):
    mask = val_mask([f"d{i}" for i in range(n)], 0, fraction)
    assert sum(mask) == n_val


def test_val_mask_is_a_function_of_seed_and_name():
    names = [f"d{i}" for i in range(50)]
    a = val_mask(names, 1, 0.2)
    held = {n for n, m in zip(names, a, strict=True) if m}
    b = val_mask(names[::-1], 1, 0.2)
    assert held == {n for n, m in zip(names[::-1], b, strict=True) if m}
    assert a != val_mask(names, 2, 0.2)


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"source": "web"}, "corpus.source"),
        ({"max_bytes": 0}, "corpus.max_bytes"),
        ({"max_bytes": -5}, "corpus.max_bytes"),
        ({"val_fraction": 0.0}, "corpus.val_fraction"),
        ({"val_fraction": 1.0}, "corpus.val_fraction"),
        ({"text_field": ""}, "corpus.text_field"),
        ({"paths": ("x.txt",)}, "corpus.paths"),
        ({"source": "files"}, "corpus.paths"),
        ({"source": "files", "paths": "a.txt"}, "corpus.paths"),
    ],
)
def test_bad_config_names_the_key(tmp_path, kw, key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        validate_corpus(CorpusConfig(**kw))
    with pytest.raises(UserError):
        prepare_corpus(CorpusConfig(**kw), 0, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_paths_name_the_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "empty.txt").write_text("")
    cases = {
        str(tmp_path / "missing.txt"): "does not exist",
        str(tmp_path / "nothing/**/*.txt"): "matches no file",
        str(tmp_path / "sub"): "is a directory",
        str(tmp_path / "empty.txt"): "every matched file is empty",
    }
    for path, why in cases.items():
        with pytest.raises(UserError, match=why) as err:
            validate_corpus(files_cfg(path))
        assert "corpus.paths" in str(err.value)
        if why != "every matched file is empty":
            assert path in str(err.value)


def test_too_few_documents(tmp_path):
    (tmp_path / "one.txt").write_text("only one")
    validate_corpus(files_cfg(tmp_path / "one.txt"))  # cheap check cannot know
    with pytest.raises(UserError, match="at least 2"):
        prepare_corpus(files_cfg(tmp_path / "one.txt"), 0, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_rows_name_file_and_line(tmp_path):
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "ok"}\n{"text": \n')
    no_field = tmp_path / "nofield.jsonl"
    no_field.write_text('{"text": "ok"}\n{"body": "x"}\n')
    not_str = tmp_path / "num.jsonl"
    not_str.write_text('{"text": 3}\n')
    pq.write_table(pa.table({"body": ["a", "b"]}), tmp_path / "d.parquet")
    (tmp_path / "fake.parquet").write_text("not parquet")
    cases = [
        (bad_json, f"{bad_json}:2: not valid JSON"),
        (no_field, f"{no_field}:2: no field 'text' (corpus.text_field)"),
        (not_str, f"{not_str}:1: field 'text' (corpus.text_field) is int"),
        (tmp_path / "d.parquet", f"{tmp_path / 'd.parquet'}: no column 'text' (corpus.text_field)"),
        (tmp_path / "fake.parquet", f"{tmp_path / 'fake.parquet'}: not a readable parquet"),
    ]
    for path, message in cases:
        with pytest.raises(UserError) as err:
            prepare_corpus(files_cfg(path), 0, tmp_path / "out")
        assert str(err.value).startswith(message)
    assert not (tmp_path / "out").exists()


# --- not text -----------------------------------------------------------------------------


def check_config(tmp_path, *paths, subprocess_=False):
    """`scalinglab check-config config.yaml bad.yaml` with a corpus of `paths`, run in tmp_path:
    (exit code, stdout, stderr)."""
    bad = tmp_path / "bad.yaml"
    listed = "".join(f"    - {json.dumps(str(p))}\n" for p in paths)
    bad.write_text(f"corpus:\n  source: files\n  paths:\n{listed}")
    argv = ["check-config", str(REPO / "config.yaml"), str(bad)]
    if subprocess_:
        proc = subprocess.run([sys.executable, "-m", "scalinglab", *argv], capture_output=True,
                              text=True, cwd=tmp_path, timeout=120)
        return proc.returncode, proc.stdout, proc.stderr
    cwd = os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    try:
        os.chdir(tmp_path)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(argv)
    finally:
        os.chdir(cwd)
    return code, out.getvalue(), err.getvalue()


def test_a_folder_of_random_binaries_is_refused_by_check_config(tmp_path):
    """The issue's case: 20 random binary files were taken as a corpus and trained on."""
    rng = np.random.default_rng(0)
    for i in range(20):
        (tmp_path / "blobs" / f"f{i:02d}").parent.mkdir(exist_ok=True)
        (tmp_path / "blobs" / f"f{i:02d}").write_bytes(rng.bytes(5000))
    code, out, err = check_config(tmp_path, tmp_path / "blobs/*", subprocess_=True)
    assert code == 2 and out == ""
    first = str(tmp_path / "blobs" / "f00")
    assert err.startswith(f"scalinglab check-config: error: {first}: not a UTF-8 text file")
    assert len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "blobs"]  # nothing written


def _mostly_invalid_utf8(n: int) -> bytes:
    # continuation bytes (0x80-0xBF) alone and 0xF8-0xFF are never valid; no NUL anywhere
    rng = np.random.default_rng(1)
    return bytes(rng.choice([*range(0x80, 0xC0), *range(0xF8, 0x100)], size=n).tolist())


@pytest.mark.parametrize(
    ("name", "content", "why"),
    [
        ("nul.txt", b"looks like text\n" * 100 + b"\0" + b"more text\n" * 10, "a NUL byte"),
        ("utf16.txt", "UTF-16 text\n".encode("utf-16") * 50, "a NUL byte"),
        ("latin.txt", _mostly_invalid_utf8(3000), "are not valid UTF-8"),
        ("latin1.txt", "café crème brûlée à la française; ".encode("latin-1") * 40,
         "are not valid UTF-8"),
        ("rows.jsonl", b'{"text": "ok"}\n' + _mostly_invalid_utf8(500), "are not valid UTF-8"),
        ("blob.txt.gz", gzip.compress(np.random.default_rng(2).bytes(4000)), "decompressed"),
        ("fake.txt.gz", b"this is not gzip data at all", "not a readable gzip file"),
        ("fake.txt.xz", b"this is not xz data at all", "not a readable xz file"),
        ("fake.txt.zst", b"this is not zstd data at all", "not a readable zstd file"),
    ],
)
def test_a_file_that_is_not_text_is_exit_2_naming_it(tmp_path, name, content, why):
    write_docs(tmp_path / "good", 3)
    bad_file = tmp_path / name
    bad_file.write_bytes(content)
    code, out, err = check_config(tmp_path, tmp_path / "good/*.txt", bad_file)
    assert code == 2 and out == ""
    assert err.startswith(f"scalinglab check-config: error: {bad_file}: ")
    assert why in err and len(err.splitlines()) == 1
    with pytest.raises(UserError, match=re.escape(str(bad_file))):
        prepare_corpus(files_cfg(tmp_path / "good/*.txt", bad_file), 0, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_text_check_counts_invalid_bytes_against_one_percent(tmp_path):
    text = ("x" * 99).encode()
    check_text("a", text + b"\xff")  # 1 in 100: not more than 1%
    with pytest.raises(UserError, match=r"2 of its first 101 bytes"):
        check_text("a", text + b"\xff\xff")
    # a multi-byte character cut by the end of a full sample is not an invalid byte
    sample = ("é" * (SAMPLE_BYTES // 2)).encode()[: SAMPLE_BYTES - 1] + b"\xc3"
    assert len(sample) == SAMPLE_BYTES
    check_text("a", sample)
    check_text("a", "ünïcödé ✓ 😀\n".encode() * 100)


# --- compressed, arrow, save_to_disk ----------------------------------------------------------


def zstd_compress(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as out:
        out.write(data)
    return sink.getvalue().to_pybytes()


COMPRESSORS = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress, "zst": zstd_compress}


def all_docs(out_dir):
    return read_split(out_dir / "train.jsonl") + read_split(out_dir / "val.jsonl")


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_compressed_text_and_jsonl_give_the_same_documents(tmp_path, suffix):
    compress = COMPRESSORS[suffix]
    plain, packed = tmp_path / "plain", tmp_path / "packed"
    plain.mkdir()
    packed.mkdir()
    rows = [{"text": f"row {i} ünïcode ✓ " + "word " * (i % 50)} for i in range(3000)]
    jsonl = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    assert len(jsonl) > 2 * SAMPLE_BYTES  # read in more than one chunk
    texts = [f"def f{i}():\n    return '{i} é'\n".encode() * (i + 1) for i in range(5)]
    for i, data in enumerate(texts):
        (plain / f"t{i}.py").write_bytes(data)
        (packed / f"t{i}.py.{suffix}").write_bytes(compress(data))
    (plain / "rows.jsonl").write_bytes(jsonl)
    (packed / f"rows.jsonl.{suffix}").write_bytes(compress(jsonl))

    validate_corpus(files_cfg(packed / "*"))
    a = prepare_corpus(files_cfg(plain / "*.py", plain / "rows.jsonl"), 0, tmp_path / "a")
    b = prepare_corpus(files_cfg(packed / f"*.py.{suffix}", packed / f"rows.jsonl.{suffix}"), 0,
                       tmp_path / "b")
    assert a["n_documents"]["all"] == b["n_documents"]["all"] == 5 + 3000
    assert a["sha256"]["all"] == b["sha256"]["all"]  # the same texts in the same order
    assert a["total_bytes"] == b["total_bytes"]
    assert sorted(d["text"] for d in all_docs(tmp_path / "a")) == \
        sorted(d["text"] for d in all_docs(tmp_path / "b"))
    assert b["files"][-1] == {"path": str(packed / f"rows.jsonl.{suffix}"),
                              "bytes": a["files"][-1]["bytes"], "documents": 3000}


def test_a_bad_jsonl_line_inside_a_compressed_file_names_its_line(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"text": "ok"}\n{"text": \n'))
    with pytest.raises(UserError, match=re.escape(f"{path}:2: not valid JSON")):
        prepare_corpus(files_cfg(path), 0, tmp_path / "out")
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(gzip.compress(b'{"text": "ok"}\n' * 20000)[:-100])
    validate_corpus(files_cfg(truncated))  # the first 32 KiB decompress fine
    with pytest.raises(UserError, match=re.escape(f"{truncated}: not a readable gzip file")):
        prepare_corpus(files_cfg(truncated), 0, tmp_path / "out")
    assert not (tmp_path / "out").exists()


TEXTS = ["alpha", None, "beta ✓", "gamma", "", "delta"]


def arrow_table(texts=TEXTS):
    return pa.table({"text": pa.array(texts, pa.string()), "n": list(range(len(texts)))})


def write_arrow(path, table, stream: bool, batch=2):
    with pa.OSFile(str(path), "wb") as sink:
        new = pa.ipc.new_stream if stream else pa.ipc.new_file
        with new(sink, table.schema) as writer:
            for b in table.to_batches(max_chunksize=batch):
                writer.write_batch(b)


@pytest.mark.parametrize("stream", [False, True], ids=["file", "stream"])
def test_arrow_rows_are_documents(tmp_path, stream):
    write_arrow(tmp_path / "d.arrow", arrow_table(), stream)
    m = prepare_corpus(files_cfg(tmp_path / "d.arrow"), 0, tmp_path / "o")
    path = str(tmp_path / "d.arrow")
    assert sorted((d["name"], d["text"]) for d in all_docs(tmp_path / "o")) == [
        (f"{path}:0", "alpha"), (f"{path}:2", "beta ✓"), (f"{path}:3", "gamma"),
        (f"{path}:5", "delta"),
    ]
    assert m["total_bytes"] == len("alphabeta ✓gammadelta".encode())


def test_arrow_column_is_corpus_text_field(tmp_path):
    table = pa.table({"body": pa.array(["one", "two", "three"], pa.large_string())})
    write_arrow(tmp_path / "d.arrow", table, stream=True)
    prepare_corpus(files_cfg(tmp_path / "d.arrow", text_field="body"), 0, tmp_path / "o")
    assert sorted(d["text"] for d in all_docs(tmp_path / "o")) == ["one", "three", "two"]
    cases = [
        (files_cfg(tmp_path / "d.arrow"), "no column 'text' (corpus.text_field)"),
        (files_cfg(tmp_path / "d.arrow", text_field="n"), "no column 'n'"),
    ]
    write_arrow(tmp_path / "num.arrow", pa.table({"text": [1, 2]}), stream=False)
    cases.append((files_cfg(tmp_path / "num.arrow"), "has type int64, not string"))
    (tmp_path / "fake.arrow").write_text("not arrow")
    cases.append((files_cfg(tmp_path / "fake.arrow"), "not a readable arrow file"))
    for cfg, message in cases:
        with pytest.raises(UserError, match=re.escape(message)) as err:
            validate_corpus(cfg)  # check-config already sees it
        assert str(err.value).startswith(cfg.paths[0])


def save_to_disk_folder(root, shards, order=None):
    """What `datasets.Dataset.save_to_disk` writes: stream-format shards named in state.json."""
    root.mkdir(parents=True)
    names = [f"data-{i:05d}-of-{len(shards):05d}.arrow" for i in range(len(shards))]
    for name, texts in zip(names, shards, strict=True):
        write_arrow(root / name, arrow_table(texts), stream=True)
    listed = [names[i] for i in (order or range(len(names)))]
    (root / "state.json").write_text(json.dumps(
        {"_data_files": [{"filename": n} for n in listed], "_fingerprint": "0", "_split": None}))
    (root / "dataset_info.json").write_text(json.dumps({"features": {"text": {"dtype": "string"}}}))
    return [str(root / n) for n in listed]


def test_a_save_to_disk_folder_is_read_in_its_state_order(tmp_path):
    shards = [["a0", "a1", "a2"], ["b0", "b1"]]
    files = save_to_disk_folder(tmp_path / "ds", shards, order=[1, 0])
    m = prepare_corpus(files_cfg(tmp_path / "ds"), 0, tmp_path / "o")
    assert [f["path"] for f in m["files"]] == files  # shard 1 first, as state.json lists
    assert [f["documents"] for f in m["files"]] == [2, 3]
    by_name = {d["name"]: d["text"] for d in all_docs(tmp_path / "o")}
    assert [by_name[f"{files[0]}:{i}"] for i in range(2)] == ["b0", "b1"]
    assert [by_name[f"{files[1]}:{i}"] for i in range(3)] == ["a0", "a1", "a2"]
    # ... which check-config accepts as a path
    code, out, err = check_config(tmp_path, tmp_path / "ds")
    assert code == 0 and out.startswith("config OK") and err == ""


def test_a_save_to_disk_folder_with_splits_asks_for_one(tmp_path):
    save_to_disk_folder(tmp_path / "dd" / "train", [["x", "y"]])
    (tmp_path / "dd" / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    with pytest.raises(UserError, match=r"several splits \(train, test\); name one, e\.g\. "):
        validate_corpus(files_cfg(tmp_path / "dd"))
    validate_corpus(files_cfg(tmp_path / "dd" / "train"))
    (tmp_path / "dd" / "train" / "data-00000-of-00001.arrow").unlink()
    with pytest.raises(UserError, match="listed in .*state.json.* does not exist"):
        validate_corpus(files_cfg(tmp_path / "dd" / "train"))


def test_compressed_tables_are_refused(tmp_path):
    path = tmp_path / "d.parquet.gz"
    path.write_bytes(gzip.compress(b"PAR1"))
    with pytest.raises(UserError, match=re.escape(f"{path}: a compressed .parquet file")):
        validate_corpus(files_cfg(path))
