"""SP against muP on the variants phase: per-variant parametrization and LR, the phase's output
names, the frontier laws and their figure, the shipped sp_vs_mup.yaml, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import REPO, job_counts, snakemake
from scalinglab import phases
from scalinglab.cli import main as cli
from scalinglab.config import StudyConfig, from_dict
from scalinglab.config.variants import RESERVED_NAMES
from scalinglab.phases import variants
from scalinglab.training.spec import build_model, build_optimizer

BASE = {"tokenizer": {"vocab_size": 300},
        "model": {"block_size": 32, "sizes": [{"n_layer": 1, "n_embd": 8, "n_head": 1}]},
        "parametrization": {"base_width": 8},
        "training": {"batch_size": 8, "warmup_tokens": 1024, "lr": 3e-3},
        "isoflop": {"budgets": [1.0e10], "min_steps": 5}}
SECTION = {
    "enabled": True, "name": "sp_vs_mup", "reference": "sp",
    "models": [{"name": "sp", "parametrization": "sp", "lr": 2e-3},
               {"name": "mup", "parametrization": "mup", "lr": 8e-3}],
    "sizes": [{"n_layer": 1, "n_embd": 8, "n_head": 1}, {"n_layer": 1, "n_embd": 16, "n_head": 2},
              {"n_layer": 2, "n_embd": 24, "n_head": 2}],
    "budgets": [4.0e9, 1.0e10],
}
SHIPPED = [str(REPO / "config.yaml"), str(REPO / "workflow" / "configs" / "sp_vs_mup.yaml")]


def config(section=None, **top) -> StudyConfig:
    return from_dict(StudyConfig, {**BASE, **top, "variants": dict(SECTION, **(section or {}))})


# -- the overrides reach the run table, the spec and the model ------------------------------------
def test_overrides_reach_the_table_ids_and_specs():
    cfg = config()
    table = variants.plan(cfg)
    mup = table[table["variant"] == "mup"]
    assert set(mup["parametrization"]) == {"mup"} and set(mup["lr"]) == {8e-3}
    sp = table[table["variant"] == "sp"]
    assert set(sp["parametrization"]) == {"sp"} and set(sp["lr"]) == {2e-3}
    assert "mup-mup-l1-d16-h2-lr8e-03-b8" in set(mup["series_id"])
    assert "sp-sp-l1-d16-h2-lr2e-03-b8" in set(sp["series_id"])
    spec = variants.series_spec(cfg, table, "mup-mup-l1-d16-h2-lr8e-03-b8").to_dict()
    assert spec["parametrization"]["name"] == "mup" and spec["training"]["lr"] == 8e-3
    assert spec["parametrization"]["base_width"] == 8  # the rest of the section is the study's
    # muP at m = 16 / 8 = 2: logits x 1/m, scores 1/d_head (d_head 8)
    assert spec["model"]["logit_scale"] == pytest.approx(0.5)
    assert spec["model"]["attn_scale"] == pytest.approx(1 / 8)
    assert spec["variant"] == {**variants.VariantConfig("mup").configured(),
                               "name": "mup", "parametrization": "mup", "lr": 8e-3}
    sp_spec = variants.series_spec(cfg, table, "sp-sp-l1-d16-h2-lr2e-03-b8").to_dict()
    assert sp_spec["model"]["logit_scale"] == 1.0
    assert sp_spec["model"]["attn_scale"] == pytest.approx(8 ** -0.5)


def _groups(spec) -> dict:
    cpu = torch.device("cpu")
    optimizer = build_optimizer(build_model(spec, cpu), spec, cpu)
    return {g["name"]: (g["lr"], g["lr_mult"]) for g in optimizer.param_groups}


def test_mup_variant_trains_hidden_matrices_at_lr_over_m_and_sp_is_unchanged():
    cfg = config()
    table = variants.plan(cfg)
    for width, m in ((16, 2.0), (24, 3.0)):
        layers = 1 if width == 16 else 2
        groups = _groups(variants.series_spec(
            cfg, table, f"mup-mup-l{layers}-d{width}-h2-lr8e-03-b8"))
        assert groups["hidden"] == (pytest.approx(8e-3 / m), pytest.approx(1 / m))
        for kind in ("embedding", "position", "readout", "vector"):
            assert groups[kind] == (pytest.approx(8e-3), 1.0), kind
        sp = _groups(variants.series_spec(cfg, table, f"sp-sp-l{layers}-d{width}-h2-lr2e-03-b8"))
        assert all(g == (pytest.approx(2e-3), 1.0) for g in sp.values()), sp
    # and the init: muP hidden std is init_std / sqrt(m); the logits are scaled by 1/m
    spec = variants.series_spec(cfg, table, "mup-mup-l2-d24-h2-lr8e-03-b8").to_dict()
    model = build_model(spec, torch.device("cpu"))
    std = model.transformer.h[0].attn.c_attn.weight.std().item()
    assert std == pytest.approx(0.02 / 3 ** 0.5, rel=0.1)


def test_unset_overrides_take_the_study_values_and_leave_the_spec_as_before():
    # the study under muP: a variant without overrides is muP at training.lr; one may opt out
    section = {"models": [{"name": "base"}, {"name": "sp", "parametrization": "sp"}]}
    cfg = config(section, parametrization={"name": "mup", "base_width": 8})
    table = variants.plan(cfg)
    base = table[table["variant"] == "base"].iloc[0]
    assert (base["parametrization"], base["lr"]) == ("mup", 3e-3)
    assert base["series_id"].startswith("base-mup-") and "lr3e-03" in base["series_id"]
    assert set(table[table["variant"] == "sp"]["parametrization"]) == {"sp"}
    spec = variants.series_spec(cfg, table, base["series_id"]).to_dict()
    # nothing set, nothing listed: a variants study written before the overrides keeps its specs
    assert "parametrization" not in spec["variant"] and "lr" not in spec["variant"]
    assert spec["parametrization"]["name"] == "mup" and spec["training"]["lr"] == 3e-3


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"models": [{"name": "sp"}, {"name": "mup", "parametrization": "ntk"}]},
         "variants.models[1].parametrization"),
        ({"models": [{"name": "sp"}, {"name": "mup", "lr": 0}]}, "variants.models[1].lr"),
        ({"models": [{"name": "sp"}, {"name": "mup", "lr": "fast"}]}, "variants.models[1].lr"),
        ({"sizes": [{"n_layer": 1, "n_embd": 4, "n_head": 1}]}, "variants.sizes[0]"),
        ({"sizes": [{"n_layer": 1, "n_embd": 8, "n_head": 1},
                    {"n_layer": 1, "n_embd": 12, "n_head": 2}]}, "variants.sizes[1]"),
        ({"name": "SP-vs-muP"}, "variants.name"),
        ({"name": "isoflop"}, "variants.name"),
        ({"name": "lr_transfer"}, "variants.name"),
        ({"reference": "ntk"}, "variants.reference"),
    ],
)
def test_bad_values_exit_2_naming_the_key(tmp_path, capsys, section, key):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**BASE, "variants": dict(SECTION, **section)}))
    out = tmp_path / "plan.csv"
    assert cli.main(["variants", "plan", "--config", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert key in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_mup_width_problems_name_base_width_and_the_ladder_key(capsys, tmp_path):
    # the ladder falls back to model.sizes (its width 24 is no multiple of 16): that key is named
    bad = tmp_path / "bad.yaml"
    bad.write_text("variants:\n  enabled: true\n  models:\n    - {name: mup, parametrization: "
                   "mup}\n")
    assert cli.main(["check-config", str(REPO / "config.yaml"), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "model.sizes[1]" in err and "parametrization.base_width=16" in err, err
    # an SP variant on the same ladder is fine
    bad.write_text("variants:\n  enabled: true\n  models:\n    - {name: sp, parametrization: sp, "
                   "lr: 1.0e-3}\n")
    assert cli.main(["check-config", str(REPO / "config.yaml"), str(bad)]) == 0


def test_reserved_names_cover_every_other_phases_outputs():
    """`variants.name` must not reuse a folder or file stem of another phase: scan the rules and
    the package for results/<x>, results/fits/<x>, results/figures/<x>, results/runs/<x>, ..."""
    cfg = config({"name": "variants"})
    steps = phases.steps(cfg, phases.training_groups(cfg))
    text = "\n".join([*(p.read_text() for p in [*(REPO / "workflow" / "rules").glob("*.smk"),
                                                *(REPO / "src" / "scalinglab").rglob("*.py")]),
                      # the analysis steps' files, whose paths some phases build from names
                      *(str(path) for step in steps for path in
                        [*step.outputs.values(), *(f[0] for f in step.figures.values())])])
    used = set(re.findall(r"results/([a-z][A-Za-z_]*)", text))  # not placeholders (NAME)
    for folder in ("fits", "figures", "runs", "specs"):
        used |= set(re.findall(rf"results/{folder}/([a-z][A-Za-z_]*)", text))
    # less the variants phase's own names (the default and the shipped sp_vs_mup)
    used = {u.lower() for u in used if not u.startswith(("variants", "sp_vs_mup"))}
    assert used <= set(RESERVED_NAMES), sorted(used - set(RESERVED_NAMES))


def test_output_names_follow_variants_name_and_default_paths_are_unchanged():
    default = variants.PhaseFiles.of(config({"name": "variants"}))
    assert default.targets == [
        "results/variants/plan.csv", "results/variants/runs.csv", "results/fits/variants.json",
        "results/figures/variants.png", "results/figures/variants_envelope.png",
        "results/figures/variants_isoflop.png"]
    assert (default.runs_dir, default.specs_dir) == ("results/runs/variants",
                                                     "results/specs/variants")
    assert (default.logs_dir, default.benchmarks_dir) == ("results/logs", "results/benchmarks")
    assert default.reference_args == "--reference sp"
    named = variants.PhaseFiles.of(config())
    assert named.fit_json == "results/fits/sp_vs_mup.json"
    assert named.figure() == "results/figures/sp_vs_mup.png"
    assert named.figure("isoflop") == "results/figures/sp_vs_mup_isoflop.png"
    assert named.runs_dir == "results/runs/sp_vs_mup"
    assert named.logs_dir == "results/logs/sp_vs_mup" and named.category == "sp_vs_mup"
    off = variants.PhaseFiles.of(config({"enabled": False}))
    assert off.targets == [] and off.series == []


# -- fits and the figure --------------------------------------------------------------------------
def frontier_runs(name: str, parametrization: str, lr: float, coef: float, exponent: float,
                  seed: int) -> pd.DataFrame:
    """Four sizes per budget around a frontier L_opt = coef·C^exponent (plus 1% noise)."""
    rng = np.random.default_rng(seed)
    rows = []
    for C in (1e11, 3e11, 1e12, 3e12):
        best = coef * C ** exponent
        for j, N in enumerate(np.geomspace(1e4, 1e5, 4)):
            n_opt = 3e4 * (C / 1e11) ** 0.5
            loss = best * (1 + 0.02 * np.log(N / n_opt) ** 2) * (1 + 0.01 * rng.standard_normal())
            rows.append({"variant": name, "series_id": f"{name}-s{j}",
                         "run_id": f"{name}-{j}_{C:g}", "C": C, "N": N, "D": C / (6 * N),
                         "loss": loss, "n_layer": 2,
                         "n_embd": 16 * (j + 1), "N_nonembedding": N, "N_total": 2 * N,
                         "parametrization": parametrization, "lr": lr, "attention": "softmax",
                         "feature_map": "elu", "mlp": "dense", "n_experts": 1, "moe_top_k": 1,
                         "moe_aux_coef": 0.01})
    return pd.DataFrame(rows)


def test_fit_json_has_frontier_laws_with_intervals_and_the_comparison(tmp_path):
    runs = pd.concat([frontier_runs("sp", "sp", 3e-3, 30.0, -0.05, 0),
                      frontier_runs("mup", "mup", 8e-3, 28.0, -0.05, 1)])
    runs_csv = tmp_path / "runs.csv"
    runs.to_csv(runs_csv, index=False)
    fit = tmp_path / "sp_vs_mup.json"
    assert cli.main(["variants", "fit", "--runs", str(runs_csv), "--out", str(fit),
                     "--bootstrap", "200", "--reference", "sp"]) == 0
    result = json.loads(fit.read_text())
    for name, lr in (("sp", 3e-3), ("mup", 8e-3)):
        v = result["variants"][name]
        assert v["settings"]["parametrization"] == name and v["settings"]["lr"] == lr
        law = v["loss_law"]
        assert law["exponent"] == pytest.approx(-0.05, abs=0.01)
        low, high = law["ci"]["exponent"]
        assert low <= law["exponent"] <= high and high - low < 0.05
        assert law["ci"]["coef"][0] <= law["coef"] <= law["ci"]["coef"][1]
        assert [p["C"] for p in law["points"]] == [1e11, 3e11, 1e12, 3e12]
        for p in law["points"]:
            assert p["relative_residual"] == pytest.approx(p["loss_opt"] / p["fitted"] - 1)
            assert abs(p["relative_residual"]) < 0.05
    comparison = result["comparison"]
    assert comparison["reference"] == "sp" and list(comparison["variants"]) == ["mup"]
    mup = comparison["variants"]["mup"]
    assert all(g["relative_gap"] < 0 for g in mup["loss_gap"])  # coef 28 < 30
    assert mup["verdict"] == "scale alike"
    png = tmp_path / "sp_vs_mup.png"
    assert cli.main(["variants", "plot", "frontier", "--runs", str(runs_csv), "--fit", str(fit),
                     "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_an_unknown_reference_is_a_user_error(tmp_path, capsys):
    runs_csv = tmp_path / "runs.csv"
    frontier_runs("sp", "sp", 3e-3, 30.0, -0.05, 0).to_csv(runs_csv, index=False)
    out = tmp_path / "fit.json"
    assert cli.main(["variants", "fit", "--runs", str(runs_csv), "--out", str(out),
                     "--reference", "mup", "--bootstrap", "10"]) == 2
    assert "reference 'mup'" in capsys.readouterr().err and not out.exists()


# -- the shipped config ---------------------------------------------------------------------------
def test_shipped_config_trains_both_parametrizations_on_multiples_of_base_width():
    cfg = from_dict(StudyConfig, cli.merged_config(SHIPPED))
    assert cfg.variants.name == "sp_vs_mup" and cfg.variants.reference == "sp"
    assert [(v.name, v.parametrization) for v in cfg.variants.models] == [("sp", "sp"),
                                                                          ("mup", "mup")]
    assert len(cfg.variants.budgets) >= 3  # a frontier law needs three budgets
    assert all(s.n_embd % cfg.parametrization.base_width == 0 for s in cfg.variants.sizes)
    table = variants.plan(cfg)
    trained = table[table["reason"] == ""]
    assert (trained.groupby(["variant", "C"])["N"].nunique() >= 3).all()
    # well inside 30 minutes on 2 CPU cores: less than half the architecture-variants study
    assert variants.training_flops(cfg, table) < 8e12


def test_dry_run_of_sp_vs_mup_plans_the_expected_jobs_and_names(tmp_path):
    cfg = from_dict(StudyConfig, cli.merged_config(SHIPPED))
    files = variants.PhaseFiles.of(cfg)
    trained = files.table[files.table["reason"] == ""]
    result = snakemake(tmp_path, *files.targets, "-n", "-p", "--cores", "2", "--configfile",
                       SHIPPED[1])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    counts = job_counts(output)
    assert counts["train_stable_variant"] == counts["write_spec"] - 2 == 8  # 2 x 4 widths
    # (write_spec also writes the corpus and study specs)
    # config.yaml's resources.branch_jobs: series: one job decays each series' branches
    assert len(trained) == 22
    assert sum(n for rule, n in counts.items() if rule.startswith("decay_branches_variant_")) == 8
    assert "decay_branch_variant" not in counts
    for rule in ("plan_variants", "collect_variant_metrics", "fit_variants",
                 "plot_variants_frontier", "plot_variants_envelope", "plot_variants_isoflop"):
        assert counts[rule] == 1, rule
    for name in ("results/fits/sp_vs_mup.json", "results/figures/sp_vs_mup.png",
                 "results/figures/sp_vs_mup_envelope.png", "results/sp_vs_mup/runs.csv",
                 "results/runs/sp_vs_mup/mup-mup-l2-d64-h2-lr1.3e-02-b16/C1e12/run.json",
                 "results/specs/sp_vs_mup/sp-sp-l2-d16-h2-lr3e-03-b16.json",
                 "--reference sp"):
        assert name in output, name
    assert "results/fits/variants.json" not in output and "train_stable_isoflop" not in output


@pytest.mark.slow
def test_tiny_sp_vs_mup_end_to_end(tmp_path):
    """The shipped config (both parametrizations, their LRs, base_width, the ladder) on the smoke
    corpus and context with budgets 50x smaller: every target, both frontier laws and the
    comparison."""
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(json.dumps({"variants": {"budgets": [2.0e9, 6.0e9, 2.0e10]}}))
    files = variants.PhaseFiles.of(from_dict(StudyConfig, cli.merged_config(SHIPPED)))
    result = snakemake(tmp_path, *files.targets, "--cores", "2", "--configfile",
                       str(REPO / "tests" / "smoke.yaml"), SHIPPED[1], str(tiny), timeout=1500)
    assert result.returncode == 0, result.stderr[-4000:]
    for figure in ("sp_vs_mup.png", "sp_vs_mup_envelope.png", "sp_vs_mup_isoflop.png"):
        assert (tmp_path / "results" / "figures" / figure).stat().st_size > 20_000, figure
    runs = pd.read_csv(tmp_path / "results" / "sp_vs_mup" / "runs.csv")
    assert set(runs.groupby("variant")["parametrization"].first().items()) == {
        ("sp", "sp"), ("mup", "mup")}
    assert set(runs.groupby("variant")["lr"].first().items()) == {("sp", 3e-3), ("mup", 1.3e-2)}
    fit = json.loads((tmp_path / "results" / "fits" / "sp_vs_mup.json").read_text())
    for v in fit["variants"].values():
        assert np.isfinite(v["loss_law"]["exponent"]) and len(v["loss_law"]["points"]) == 3
    assert fit["comparison"]["reference"] == "sp"
    spec = json.loads(next(Path(tmp_path, "results", "specs", "sp_vs_mup").glob("mup-*.json"))
                      .read_text())
    assert spec["parametrization"]["name"] == "mup" and spec["training"]["lr"] == 1.3e-2
