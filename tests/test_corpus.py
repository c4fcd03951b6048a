import hashlib
import json
import platform

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scalinglab.corpus import (
    CorpusConfig,
    prepare_corpus,
    stdlib_files,
    val_mask,
    validate_corpus,
)
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


def test_invalid_utf8_is_replaced_and_budget_cuts_at_a_character(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"caf\xe9 ok")
    (tmp_path / "b.txt").write_text("ééééé")  # 10 bytes
    m = prepare_corpus(
        files_cfg(tmp_path / "*.txt", max_bytes=len("caf\ufffd ok".encode()) + 5), 0, tmp_path / "o"
    )
    docs = {
        d["name"]: d["text"]
        for d in read_split(tmp_path / "o/train.jsonl") + read_split(tmp_path / "o/val.jsonl")
    }
    assert docs[str(tmp_path / "a.txt")] == "caf\ufffd ok"
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
