import hashlib
import json

import numpy as np
import pytest
from tokenizers import Tokenizer

from scalinglab.data.corpus import CorpusConfig, prepare_corpus, read_documents
from scalinglab.data.tokenizer import (
    EOT,
    encode_corpus,
    load_tokenizer,
    token_dtype,
    train_tokenizer,
)
from scalinglab.errors import UserError

TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "Grüße aus Köln — naïve café, ½ ≠ ¼.\r\n\ttabbed   spaces  \n",
    "日本語のテキスト、中文文本，한국어 텍스트.",
    "emoji 🚀🐍✨ and a zero-width\u200bjoiner, combining e\u0301.",
    "a literal <|endoftext|> inside a document is just text\n",
    "class Foo:\n    pass\n\n\n" * 5,
] + [f"line {i}: the quick brown fox jumps over the lazy dog {i * i}\n" * 3 for i in range(14)]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    docs = root / "docs"
    docs.mkdir()
    for i, text in enumerate(TEXTS):
        (docs / f"{i:02d}.txt").write_bytes(text.encode("utf-8"))
    cfg = CorpusConfig(source="files", paths=(str(docs / "*.txt"),), val_fraction=0.2)
    manifest = prepare_corpus(cfg, 0, root / "corpus")
    train_tokenizer(root / "corpus/train.jsonl", 400, root / "tokenizer.json")
    meta = encode_corpus(root / "tokenizer.json", root / "corpus", root / "tokens")
    return root, manifest, meta


def sha_file(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_round_trip_including_unicode_never_seen(built):
    root, _, _ = built
    tok = load_tokenizer(root / "tokenizer.json")
    unseen = ["Ωμέγα ∮ E⋅da = Q 🧪\r\n", "  leading and trailing  ", "\x00\x7f\ufffd", ""]
    for text in TEXTS + unseen:
        assert tok.decode(tok.encode(text).ids) == text


def test_vocab_and_special_token(built):
    root, _, meta = built
    tok = Tokenizer.from_file(str(root / "tokenizer.json"))
    assert meta["eot_id"] == tok.token_to_id(EOT) == 0
    assert meta["vocab_size"] == tok.get_vocab_size() <= 400
    assert meta["vocab_size"] > 257  # merges were learned on top of the byte alphabet
    assert meta["dtype"] == "uint16"


def test_token_files_match_meta_and_corpus(built):
    root, manifest, meta = built
    for split in ("train", "val"):
        path = root / "tokens" / f"{split}.bin"
        assert path.stat().st_size == meta[f"{split}_tokens"] * 2
        assert meta["sha256"][split] == sha_file(path)
        assert meta[f"{split}_documents"] == manifest["n_documents"][split]
    assert meta["tokenizer_sha256"] == sha_file(root / "tokenizer.json")
    assert meta["corpus_sha256"] == manifest["sha256"]
    assert meta["manifest_sha256"] == sha_file(root / "corpus/manifest.json")
    assert json.loads((root / "tokens/meta.json").read_text()) == meta
    text_tokens = meta["train_tokens"] + meta["val_tokens"] - len(TEXTS)
    assert meta["bytes_per_token"] == pytest.approx(manifest["total_bytes"] / text_tokens)


def test_end_of_text_separates_documents(built):
    root, _, meta = built
    tok = load_tokenizer(root / "tokenizer.json")
    for split in ("train", "val"):
        ids = np.fromfile(root / "tokens" / f"{split}.bin", dtype=meta["dtype"])
        assert ids[-1] == meta["eot_id"]
        pieces = np.split(ids, np.flatnonzero(ids == meta["eot_id"]) + 1)[:-1]
        texts = list(read_documents(root / "corpus" / f"{split}.jsonl"))
        # One EOT per document, including the one whose text spells "<|endoftext|>".
        assert len(pieces) == len(texts)
        assert [tok.decode(p[:-1].tolist()) for p in pieces] == texts


def test_uint32_when_the_vocab_needs_it(built, tmp_path):
    root, _, _ = built
    tok = Tokenizer.from_file(str(root / "tokenizer.json"))
    tok.add_special_tokens([f"<pad{i}>" for i in range(2**16)])
    tok.save(str(tmp_path / "big.json"))
    meta = encode_corpus(tmp_path / "big.json", root / "corpus", tmp_path / "tokens")
    assert meta["dtype"] == "uint32" and meta["vocab_size"] > 2**16
    small = json.loads((root / "tokens/meta.json").read_text())
    assert meta["train_tokens"] == small["train_tokens"]
    wide = np.fromfile(tmp_path / "tokens/train.bin", dtype=np.uint32)
    narrow = np.fromfile(root / "tokens/train.bin", dtype=np.uint16)
    np.testing.assert_array_equal(wide, narrow)


@pytest.mark.parametrize(
    ("vocab", "dtype"),
    [(257, np.uint16), (2**16, np.uint16), (2**16 + 1, np.uint32), (2**32 - 1, np.uint32)],
)
def test_token_dtype(vocab, dtype):
    assert token_dtype(vocab) == np.dtype(dtype)


@pytest.mark.parametrize("vocab", [0, 100, 256, 2**32, 2**40, 3.5, True])
def test_bad_vocab_size_names_the_key(vocab, tmp_path):
    with pytest.raises(UserError, match=r"tokenizer\.vocab_size"):
        token_dtype(vocab)
    with pytest.raises(UserError, match=r"tokenizer\.vocab_size"):
        train_tokenizer(tmp_path / "missing.jsonl", vocab, tmp_path / "tok.json")
    assert not (tmp_path / "tok.json").exists()


def test_missing_inputs_name_the_file(tmp_path):
    with pytest.raises(UserError, match="missing.jsonl"):
        train_tokenizer(tmp_path / "missing.jsonl", 300, tmp_path / "tok.json")
    with pytest.raises(UserError, match="nothing.json"):
        encode_corpus(tmp_path / "nothing.json", tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
