"""Config: from_dict names the bad key; the JSON schema is rendered from the dataclasses."""

from __future__ import annotations

import ast
import copy
import dataclasses
import subprocess
import sys
import typing

import pytest
import yaml

from helpers import REPO
from scalinglab.config import StudyConfig, from_dict, load_config
from scalinglab.errors import UserError

SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())


def test_default_config_loads():
    cfg = load_config(REPO / "config.yaml")
    assert cfg.tokenizer.vocab_size > 256
    assert len(cfg.model.sizes) >= 5
    assert len(cfg.isoflop.budgets) >= 3


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"training": {"lrr": 1}}, "training.lrr"),
        ({"bogus": 1}, "bogus"),
        ({"training": {"lr": 0}}, "training.lr"),
        ({"training": {"lr": -1e-3}}, "training.lr"),
        ({"training": {"batch_size": 0}}, "training.batch_size"),
        ({"training": {"batch_size": 2.5}}, "training.batch_size"),
        ({"isoflop": {"budgets": [1e12, -1]}}, "isoflop.budgets[1]"),
        ({"isoflop": {"budgets": "1e12"}}, "isoflop.budgets"),
        ({"model": {"sizes": [{"n_layer": 0, "n_embd": 8, "n_head": 1}]}},
         "model.sizes[0].n_layer"),
        ({"model": {"sizes": [{"n_layer": 1, "n_embd": 8}]}}, "model.sizes[0].n_head"),
        ({"schedule": {"decay_shape": "square"}}, "schedule.decay_shape"),
        ({"tokenizer": {"vocab_size": "big"}}, "tokenizer.vocab_size"),
        ({"tokenizer": {"vocab_size": 10}}, "tokenizer.vocab_size"),
        ({"tokenizer": {"vocab_size": 256}}, "tokenizer.vocab_size"),
        ({"training": "fast"}, "training"),
    ],
)
def test_bad_values_name_their_key(data, key):
    with pytest.raises(UserError) as err:
        from_dict(StudyConfig, data)
    assert key in str(err.value)


def test_numbers_written_as_text_are_accepted():
    # YAML 1.1 reads 1.0e12 (no sign in the exponent) as a string; accept it for floats
    cfg = from_dict(StudyConfig, {"isoflop": {"budgets": ["1.0e12"]}, "training": {"lr": "3e-3"}})
    assert cfg.isoflop.budgets == (1e12,)
    assert cfg.training.lr == 3e-3


def test_missing_or_broken_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [1, 2\n")
    with pytest.raises(UserError, match="bad.yaml"):
        load_config(bad)


def _walk(cls, schema, prefix=""):
    """Yield (key, dataclass default, schema default) for every leaf key."""
    props = schema["properties"]
    names = {f.name for f in dataclasses.fields(cls)}
    where = prefix or "top level"
    assert set(props) == names, f"{where}: schema {sorted(props)} vs code {sorted(names)}"
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _walk(hints[f.name], props[f.name], key + ".")
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        if isinstance(default, tuple):
            default = list(default)
        assert "description" in props[f.name], f"{key} has no description in the schema"
        if "default" in props[f.name] or default is not None:
            yield key, default, props[f.name].get("default")


def test_schema_documents_every_key_with_the_dataclass_default():
    for key, default, schema_default in _walk(StudyConfig, SCHEMA):
        assert schema_default == default, f"{key}: schema {schema_default!r} vs code {default!r}"


def _bounds(cls, schema, prefix=""):
    """Yield (key, dataclass lower bound, schema lower bound) for every leaf key; a bound is
    (value, exclusive) or None."""
    props = schema["properties"]
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _bounds(hints[f.name], props[f.name], key + ".")
            continue
        spec = props[f.name].get("items", props[f.name])
        if isinstance(spec, dict) and "exclusiveMinimum" in spec:
            schema_bound = (spec["exclusiveMinimum"], True)
        elif isinstance(spec, dict) and "minimum" in spec:
            schema_bound = (spec["minimum"], False)
        else:
            schema_bound = None
        meta = f.metadata
        code = (meta["min"], bool(meta.get("exclusive"))) if "min" in meta else None
        yield key, code, schema_bound


def test_schema_minimum_is_the_dataclass_minimum():
    checked = {key: (code, schema) for key, code, schema in _bounds(StudyConfig, SCHEMA)
               if code is not None}
    assert checked["tokenizer.vocab_size"][0] == (257, False)
    for key, (code, schema) in checked.items():
        assert schema == code, f"{key}: schema minimum {schema} vs code {code}"


def test_vocab_size_below_257_is_exit_2_naming_the_key(tmp_path):
    """The 256 byte tokens and <|endoftext|>: check-config says so before anything runs."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("tokenizer:\n  vocab_size: 10\n")
    proc = subprocess.run(
        [sys.executable, "-m", "scalinglab", "check-config", str(REPO / "config.yaml"), str(bad)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("scalinglab check-config: error: tokenizer.vocab_size: must be "
                                  ">= 257")
    assert "10" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_study_check_config_rejects_a_small_vocab_built_without_from_dict():
    from scalinglab.config import TokenizerConfig
    from scalinglab.phases.study import check_config

    cfg = load_config(REPO / "config.yaml")
    check_config(cfg)
    for size in (10, 256):
        small = dataclasses.replace(cfg, tokenizer=TokenizerConfig(vocab_size=size))
        with pytest.raises(UserError, match=rf"tokenizer\.vocab_size={size} is too small"):
            check_config(small)
    check_config(dataclasses.replace(cfg, tokenizer=TokenizerConfig(vocab_size=257)))


def test_readme_config_table_is_rendered_from_the_schema():
    """The README's key table is `python -m scalinglab config-reference` (and what
    `python -m scalinglab.config.schema --write` writes): regenerate it when the schema changes."""
    from scalinglab.config.reference import END, START, markdown_table

    readme = (REPO / "README.md").read_text()
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    assert START in readme and END in readme
    shown = readme[readme.index(START): readme.index(END) + len(END)]
    assert shown == markdown_table(schema)
    # every leaf key of the schema appears, dotted
    for key in ("corpus.max_bytes", "isoflop.max_tokens_per_param", "hparams.near_optimal",
                "resources.flops_per_second", "variants.models"):
        assert f"| `{key}` |" in shown


def test_regenerating_the_schema_and_the_key_table_changes_nothing():
    """workflow/schemas/config.schema.yaml and the README's table are rendered from the
    dataclasses (`python -m scalinglab.config.schema --write`); a field edited without
    regenerating fails here."""
    from scalinglab.config import schema

    text = (REPO / schema.SCHEMA_PATH).read_text()
    assert text.startswith("# generated by `python -m scalinglab.config.schema --write`; "
                           "do not edit\n")
    assert schema.render() == text
    assert yaml.safe_load(text) == schema.json_schema()
    readme = (REPO / "README.md").read_text()
    assert schema.readme_with_table(readme) == readme
    proc = subprocess.run([sys.executable, "-m", "scalinglab.config.schema", "--check"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_schema_check_names_a_stale_file(tmp_path):
    from scalinglab.config import schema

    stale = tmp_path / "config.schema.yaml"
    stale.write_text(schema.render().replace("default: 128", "default: 64"))
    readme = tmp_path / "README.md"
    readme.write_text((REPO / "README.md").read_text())
    args = ["--schema", str(stale), "--readme", str(readme)]
    assert schema.main(["--check", *args]) == 1
    assert schema.main(["--write", *args]) == 0
    assert stale.read_text() == schema.render()
    assert schema.main(["--check", *args]) == 0


def test_every_key_has_one_description_in_its_dataclass():
    """The schema's descriptions are the fields' `doc` metadata: a key without one cannot be
    rendered."""
    from scalinglab.config import schema

    def leaves(spec, key=""):
        for name, sub in spec.get("properties", {}).items():
            if sub.get("type") == "object":
                yield from leaves(sub, f"{key}{name}.")
            else:
                yield f"{key}{name}", sub
                if isinstance(sub.get("items"), dict) and "properties" in sub["items"]:
                    yield from leaves(sub["items"], f"{key}{name}[].")

    found = dict(leaves(schema.json_schema()))
    assert {"model.sizes[].n_head", "variants.models[].lr", "wsd_vs_cosine.sizes[].n_embd",
            "parametrization.alpha", "corpus.val_fraction"} <= set(found)
    for key, spec in found.items():
        assert spec.get("description"), f"{key} has no description"

    @dataclasses.dataclass(frozen=True)
    class Undocumented:
        x: int = 1

    with pytest.raises(TypeError, match="Undocumented.x"):
        schema._object(Undocumented)


SHIPPED = [["config.yaml"], ["config.yaml", "tests/smoke.yaml"],
           *(["config.yaml", f"workflow/configs/{p.name}"]
             for p in sorted((REPO / "workflow/configs").glob("*.yaml")))]


@pytest.mark.parametrize("files", SHIPPED, ids="+".join)
def test_snakemake_validate_accepts_every_shipped_config_and_fills_the_same_defaults(files):
    """`validate(config, schema)` in common.smk accepts each shipped config, and the defaults it
    fills in from the schema build the same study as the dataclass defaults do."""
    from snakemake.utils import validate

    from scalinglab.cli import main as cli
    from scalinglab.config import to_dict

    data = cli.merged_config([str(REPO / f) for f in files])
    filled = copy.deepcopy(data)
    validate(filled, str(REPO / "workflow/schemas/config.schema.yaml"))
    assert set(filled) == {f.name for f in dataclasses.fields(StudyConfig)}
    assert to_dict(from_dict(StudyConfig, filled)) == to_dict(from_dict(StudyConfig, data))


@pytest.mark.parametrize(
    "data",
    [
        {"training": {"lrr": 1}}, {"bogus": 1}, {"training": {"lr": 0}},
        {"training": {"batch_size": 2.5}}, {"isoflop": {"budgets": [0]}},
        {"isoflop": {"budgets": [1e12, -1]}}, {"isoflop": {"budgets": "1e12"}},
        {"model": {"sizes": [{"n_layer": 0, "n_embd": 8, "n_head": 1}]}},
        {"model": {"sizes": [{"n_layer": 1, "n_embd": 8}]}},
        {"schedule": {"decay_shape": "square"}}, {"tokenizer": {"vocab_size": "big"}},
        {"tokenizer": {"vocab_size": 256}}, {"training": "fast"},
        {"corpus": {"val_fraction": 1.0}}, {"parametrization": {"alpha": 0.3}},
        {"lr_transfer": {"widths": [64, 64]}},
        {"variants": {"models": [{"name": "A"}]}},
        {"variants": {"models": [{"name": "a", "parametrization": "ntk"}]}},
    ],
    ids=repr,
)
def test_snakemake_validate_rejects_bad_configs(data):
    """common.smk's `validate(config, schema)` refuses each (naming the key), as from_dict or the
    study's own checks do."""
    import jsonschema
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    from scalinglab.cli import io as cli
    from scalinglab.data.corpus import validate_corpus
    from scalinglab.phases.study import check_config

    merged = cli.merged_config([str(REPO / "config.yaml")])
    cli.deep_update(merged, copy.deepcopy(data))
    with pytest.raises(WorkflowError) as err:
        validate(copy.deepcopy(merged), str(REPO / "workflow/schemas/config.schema.yaml"))
    cause = err.value.__context__  # raised while handling jsonschema's error
    assert isinstance(cause, jsonschema.ValidationError)
    top = next(iter(data))
    assert list(cause.absolute_path)[:1] == [top] or repr(top) in cause.message, cause
    with pytest.raises(UserError):
        cfg = from_dict(StudyConfig, merged)
        check_config(cfg)
        validate_corpus(cfg.corpus)


def test_config_is_the_bottom_layer():
    """scalinglab.config imports nothing of scalinglab but errors and atomic, and every import
    is at the top of its module (none hidden in a function to dodge a cycle)."""
    allowed = {"scalinglab.errors", "scalinglab.atomic"}
    for path in sorted((REPO / "src/scalinglab/config").glob("*.py")):
        tree = ast.parse(path.read_text())
        top = set(tree.body)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            assert node in top, f"{path.name}:{node.lineno}: an import inside a function"
            names = [node.module] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names]
            for name in names:
                if name and name.startswith("scalinglab"):
                    assert name in allowed or name.startswith("scalinglab.config."), \
                        f"{path.name}:{node.lineno}: imports {name}"
    code = ("import sys, scalinglab.config, scalinglab.config.schema; "
            "print(sorted({m for m in sys.modules if m.startswith('scalinglab')"
            " and not m.startswith('scalinglab.config')}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert proc.stdout.strip() in ("['scalinglab', 'scalinglab.atomic', 'scalinglab.errors']",)


def test_the_shipped_gpu_study_config_is_valid(tmp_path, monkeypatch, capsys):
    """workflow/configs/gpu.yaml plans 10M-115M-parameter models on a user's corpus."""
    from scalinglab.cli import main as cli

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jsonl").write_text('{"text": "def f(): return 1"}\n' * 20)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["check-config", str(REPO / "config.yaml"),
                     str(REPO / "workflow/configs/gpu.yaml")]) == 0
    out = capsys.readouterr().out
    assert "5 sizes x 4 budgets" in out
    cfg = from_dict(StudyConfig, cli.merged_config([str(REPO / "config.yaml"),
                                                   str(REPO / "workflow/configs/gpu.yaml")]))
    n = [12 * s.n_layer * s.n_embd**2 for s in cfg.model.sizes]
    assert 9e6 < min(n) and max(n) < 1.6e8
    assert cfg.training.device == "cuda"
