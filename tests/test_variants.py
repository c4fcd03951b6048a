"""The architecture-variants phase: counts, run table, specs, fits, figures, bad input, workflow."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import REPO, job_counts, snakemake
from scalinglab.cli import main as cli
from scalinglab.config import StudyConfig, from_dict
from scalinglab.model.flops import ModelCounts, model_counts
from scalinglab.model.gpt import GPT, GPTConfig
from scalinglab.model.moe import MoEMLP
from scalinglab.phases import variants, variants_analysis
from scalinglab.training.spec import build_model

SECTION = {
    "enabled": True,
    "models": [{"name": "dense"},
               {"name": "moe", "mlp": "moe", "n_experts": 4, "moe_top_k": 2},
               {"name": "linear", "attention": "linear", "feature_map": "relu"}],
    "sizes": [{"n_layer": 1, "n_embd": 8, "n_head": 1}, {"n_layer": 1, "n_embd": 16, "n_head": 2},
              {"n_layer": 2, "n_embd": 24, "n_head": 2}],
    "budgets": [4.0e9, 1.0e10],
}
BASE = {"tokenizer": {"vocab_size": 300},
        "model": {"block_size": 32, "sizes": [{"n_layer": 1, "n_embd": 8, "n_head": 1}]},
        "training": {"batch_size": 8, "warmup_tokens": 1024},
        "isoflop": {"budgets": [1.0e10], "min_steps": 5}}


def config(section=None) -> StudyConfig:
    return from_dict(StudyConfig, {**BASE, "variants": dict(SECTION, **(section or {}))})


# -- counting -------------------------------------------------------------------------------------
TINY = GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_embd=16, n_head=2)


def test_moe_counts_by_hand():
    cfg = replace(TINY, mlp="moe", n_experts=3, moe_top_k=2)
    # per block: ln_1 + ln_2 32, attention 4 * 16^2 = 1024, each expert 2 * 4 * 16^2 = 2048,
    # router 3 * 16 = 48. All experts: 32 + 1024 + 3 * 2048 + 48 = 7248 per block;
    # active (2 experts): 32 + 1024 + 2 * 2048 + 48 = 5200 per block; plus ln_f 16.
    c = model_counts(cfg)
    assert c.N == 2 * 7248 + 16 == 14512
    assert c.N_active == 2 * 5200 + 16 == 10416
    assert c.N_total == 14512 + (2 * 64 + 16) * 16 == 16816
    # 6 N_active + attention 6 * 2 * 16 * 16 + head 6 * 16 * 64
    assert c.flops_per_token == 6 * 10416 + 3072 + 6144 == 71712
    model = GPT(cfg)
    assert c.N_total == sum(p.numel() for p in model.parameters())
    kinds = model.parameter_kinds()
    non_embedding = {n: p.numel() for n, p in model.named_parameters()
                     if kinds[n] not in ("embedding", "position", "readout")}
    assert c.N == sum(non_embedding.values())
    idle = [n for n in non_embedding if ".experts.2." in n]  # one idle expert per block
    assert c.N_active == c.N - sum(non_embedding[n] for n in idle)


def test_linear_attention_counts_by_hand():
    # same parameters as softmax; the attention term reads chunk + d_head = 16 + 8 = 24
    # positions, not block_size = 16 (chunk = min(64, block_size))
    c = model_counts(replace(TINY, attention="linear"))
    assert (c.N, c.N_active, c.N_total) == (6224, 6224, 8528)
    assert c.flops_per_token == 6 * 6224 + 6 * 2 * 24 * 16 + 6 * 16 * 64 == 48096
    long = GPTConfig(vocab_size=64, block_size=1024, n_layer=2, n_embd=32, n_head=2)
    softmax, linear = model_counts(long, "6N+attn"), model_counts(replace(long, attention="linear"),
                                                                 "6N+attn")
    assert softmax.flops_per_token - 6 * softmax.N == 6 * 2 * 1024 * 32
    assert linear.flops_per_token - 6 * linear.N == 6 * 2 * (64 + 16) * 32
    assert model_counts(replace(TINY, attention="linear"), "6N").flops_per_token == 6 * 6224


def test_dense_active_is_n():
    c = model_counts(TINY)
    assert c.N_active == c.N == 6224
    assert ModelCounts(N=5, N_total=7, flops_per_token=30.0, convention="6N").N_active == 5


# -- the run table and the specs ------------------------------------------------------------------
def test_plan_rows_ids_and_active_counts():
    cfg = config()
    table = variants.plan(cfg)
    assert len(table) == 3 * 3 * 2  # variants x sizes x budgets
    assert table["run_id"].is_unique
    assert list(dict.fromkeys(table["variant"])) == ["dense", "moe", "linear"]
    row = table[(table["variant"] == "moe") & (table["n_embd"] == 16)
                & (table["C"] == 1e10)].iloc[0]
    assert row["series_id"] == "moe-sp-l1-d16-h2-lr3e-03-b8"
    assert row["run_id"] == "moe-sp-l1-d16-h2-lr3e-03-b8_C1e10"
    counts = model_counts(variants.gpt_config(cfg, cfg.variants.models[1],
                                              cfg.variants.sizes[1]))
    assert row["N"] == row["N_active"] == counts.N_active < row["N_nonembedding"] == counts.N
    assert row["steps"] == round(1e10 / (counts.flops_per_token * 8 * 32))
    assert row["D"] == row["steps"] * 256 and row["phase"] == "variants"
    dense = table[(table["variant"] == "dense")]
    assert (dense["N"] == dense["N_nonembedding"]).all()
    # one stable run per series, to its last trained branch point
    for _, rows in table.groupby("series_id"):
        trained = rows[rows["reason"] == ""]
        assert (rows["stable_steps"] == trained["decay_start"].max()).all()


def test_empty_ladder_and_budgets_fall_back_to_the_base_study():
    table = variants.plan(config({"sizes": [], "budgets": []}))
    assert set(table["n_embd"]) == {8} and set(table["C"]) == {1e10}


def test_disabled_phase_plans_nothing_and_the_default_config_is_off():
    assert variants.plan(config({"enabled": False})).empty
    default = from_dict(StudyConfig, cli.merged_config([str(REPO / "config.yaml")]))
    assert not default.variants.enabled and variants.plan(default).empty


def test_spec_is_what_the_trainer_reads():
    cfg = config()
    table = variants.plan(cfg)
    sid = "moe-sp-l1-d16-h2-lr3e-03-b8"
    spec = variants.series_spec(cfg, table, sid).to_dict()
    assert spec["phase"] == "variants" and spec["variant"]["name"] == "moe"
    assert (spec["model"]["mlp"], spec["model"]["n_experts"], spec["model"]["moe_top_k"]) == (
        "moe", 4, 2)
    rows = table[table["series_id"] == sid]
    assert spec["N"] == spec["N_active"] == int(rows["N"].iloc[0])
    assert spec["flops_per_token"] == float(rows["flops_per_token"].iloc[0])
    assert [b["label"] for b in spec["branches"]] == ["C4e9", "C1e10"]
    model = build_model(spec, torch.device("cpu"))
    assert isinstance(model.transformer.h[0].mlp, MoEMLP)
    assert model.config.moe_top_k == 2
    linear = variants.series_spec(cfg, table, "linear-sp-l2-d24-h2-lr3e-03-b8").to_dict()
    assert linear["model"]["attention"] == "linear" and linear["model"]["feature_map"] == "relu"
    with pytest.raises(variants.UserError, match="unknown variants series"):
        variants.series_spec(cfg, table, "nope")


def test_shipped_variants_config_plans_method_2_for_every_variant():
    paths = [str(REPO / "config.yaml"), str(REPO / "workflow" / "configs" / "variants.yaml")]
    cfg = from_dict(StudyConfig, cli.merged_config(paths))
    table = variants.plan(cfg)
    trained = table[table["reason"] == ""]
    assert set(trained["variant"]) == {"dense", "moe", "linear"}
    sizes_per_budget = trained.groupby(["variant", "C"])["N"].nunique()
    assert (sizes_per_budget >= 3).all() and trained["C"].nunique() >= 3


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"attention": "mamba"}, "variants.models[1].attention"),
        ({"mlp": "sparse"}, "variants.models[1].mlp"),
        ({"mlp": "moe", "n_experts": 2, "moe_top_k": 3}, "variants.models[1].moe_top_k"),
        ({"attention": "linear", "feature_map": "softplus"}, "variants.models[1].feature_map"),
        ({"name": "Big-MoE"}, "variants.models[1].name"),
        ({"name": "dense"}, "variants.models[1].name"),
        ({"experts": 4}, "variants.models[1].experts"),
        ({"n_experts": 0}, "variants.models[1].n_experts"),
    ],
)
def test_bad_variant_exits_2_naming_the_key(tmp_path, capsys, change, key):
    models = [{"name": "dense"}, {"name": "moe", **change}]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**BASE, "variants": dict(SECTION, models=models)}))
    out = tmp_path / "plan.csv"
    assert cli.main(["variants", "plan", "--config", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert key in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_check_config_rejects_a_bad_variant_too(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("variants:\n  enabled: true\n  models:\n"
                   "    - {name: moe, mlp: moe, n_experts: 2, moe_top_k: 4}\n")
    assert cli.main(["check-config", str(REPO / "config.yaml"), str(bad)]) == 2
    assert "variants.models[0].moe_top_k" in capsys.readouterr().err


# -- fits and figures -----------------------------------------------------------------------------
ALPHA, BETA = 0.34, 0.28


def synthetic_runs(E: float, A: float, name: str) -> pd.DataFrame:
    """Final losses from L = E + A/N^alpha + B/D^beta on ladders centred on each optimum."""
    rows = []
    for C in (1e16, 1e17, 1e18):
        n_opt = 0.1 * C ** (BETA / (ALPHA + BETA))
        for j, N in enumerate(n_opt * np.geomspace(1 / 8, 8, 7)):
            D = C / (6 * N)
            rows.append({"variant": name, "series_id": f"{name}-s{j}-{C:g}",
                         "run_id": f"{name}-{j}_{C:g}", "C": C, "N": N, "D": D,
                         "loss": E + A / N**ALPHA + 410.0 / D**BETA, "n_layer": 2,
                         "n_embd": 16 * (j + 1), "N_nonembedding": 4 * N, "N_total": 5 * N,
                         "attention": "softmax", "feature_map": "elu", "mlp": "dense",
                         "n_experts": 1, "moe_top_k": 1, "moe_aux_coef": 0.01,
                         "parametrization": "sp", "lr": 3e-3})
    return pd.DataFrame(rows)


def test_fit_recovers_the_allocation_exponent_per_variant():
    runs = pd.concat([synthetic_runs(1.7, 400.0, "dense"), synthetic_runs(1.6, 300.0, "moe")])
    result = variants_analysis.fit(runs, n_boot=50)
    assert list(result["variants"]) == ["dense", "moe"]
    want_a = BETA / (ALPHA + BETA)
    for name, v in result["variants"].items():
        assert v["isoflop"]["a"] == pytest.approx(want_a, abs=0.03), name
        assert v["isoflop"]["a"] + v["isoflop"]["b"] == pytest.approx(1.0, abs=1e-6)
        assert v["envelope"]["tokens_per_param"] > 0
        assert len(v["envelope"]["budgets"]) == 3 and v["loss_law"]["exponent"] < 0
        assert v["settings"]["mlp"] == "dense" and v["n_runs"] == 21
    dense, moe = (result["variants"][k]["envelope"]["budgets"] for k in ("dense", "moe"))
    assert all(m["loss_opt"] < d["loss_opt"] for d, m in zip(dense, moe, strict=True))


def test_a_fit_the_data_cannot_support_is_recorded_not_raised():
    one_budget = synthetic_runs(1.7, 400.0, "tiny")
    one_budget = one_budget[one_budget["C"] == 1e16]
    runs = pd.concat([synthetic_runs(1.7, 400.0, "dense"), one_budget])
    result = variants_analysis.fit(runs, n_boot=20)
    assert "error" in result["variants"]["tiny"]["isoflop"]
    assert "error" not in result["variants"]["dense"]["isoflop"]
    assert any("tiny" in line and "failed" in line
               for line in variants_analysis.summary_lines(result))


def test_fit_and_plot_cli_write_json_and_figures(tmp_path):
    runs = pd.concat([synthetic_runs(1.7, 400.0, "dense"), synthetic_runs(1.6, 300.0, "moe")])
    runs_csv = tmp_path / "runs.csv"
    runs.to_csv(runs_csv, index=False)
    fit = tmp_path / "variants.json"
    assert cli.main(["variants", "fit", "--runs", str(runs_csv), "--out", str(fit),
                     "--bootstrap", "50"]) == 0
    result = json.loads(fit.read_text())
    assert result["variants"]["moe"]["isoflop"]["ci"]["a"][0] < 0.46
    for figure in ("envelope", "isoflop"):
        png = tmp_path / f"{figure}.png"
        assert cli.main(["variants", "plot", figure, "--runs", str(runs_csv), "--fit", str(fit),
                         "--out", str(png)]) == 0
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def _fake_run(folder: Path, spec: dict, branch: dict | None) -> Path:
    folder.mkdir(parents=True)
    record = {"spec": spec, "run_id": branch["run_id"] if branch else None}
    if branch:
        record.update(label=branch["label"], C=branch["C"], D=branch["D"], steps=10,
                      final_val_loss=3.0, wall_seconds=1.0)
    (folder / "run.json").write_text(json.dumps(record))
    row = {"step": 10, "tokens": 2560, "flops": 1e9, "lr": 1e-3, "train_loss": 3.1,
           "val_loss": 3.0, "elapsed": 1.0}
    (folder / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    return folder / "run.json"


def test_collect_adds_variant_columns(tmp_path):
    cfg = config()
    table = variants.plan(cfg)
    stable, branches = [], []
    for sid in ("moe-sp-l1-d16-h2-lr3e-03-b8", "linear-sp-l1-d8-h1-lr3e-03-b8"):
        spec = variants.series_spec(cfg, table, sid).to_dict()
        stable.append(_fake_run(tmp_path / sid / "stable", spec, None))
        branch = spec["branches"][1]
        branches.append(_fake_run(tmp_path / sid / branch["label"], spec, branch))
    runs, curves = variants_analysis.collect(stable, branches)
    assert list(runs["variant"]) == ["linear", "moe"] or list(runs["variant"]) == ["moe",
                                                                                   "linear"]
    moe = runs[runs["variant"] == "moe"].iloc[0]
    assert moe["mlp"] == "moe" and moe["n_experts"] == 4 and moe["N"] == moe["N_active"]
    assert moe["N_nonembedding"] > moe["N_active"]
    assert set(curves["variant"]) == {"moe", "linear"} and len(curves) == 4


# -- the workflow ---------------------------------------------------------------------------------
TARGETS = ["results/fits/variants.json", "results/figures/variants_envelope.png",
           "results/figures/variants_isoflop.png"]




def test_dry_run_plans_each_variant_ladder(tmp_path):
    section = tmp_path / "variants.yaml"
    section.write_text(json.dumps({"variants": SECTION}))
    configs = [str(REPO / "tests" / "smoke.yaml"), str(section)]
    result = snakemake(tmp_path, *TARGETS, "-n", "--cores", "2", "--quiet", "rules",
                       "--configfile", *configs)
    assert result.returncode == 0, result.stderr + result.stdout
    counts = job_counts(result.stdout + result.stderr)
    cfg = from_dict(StudyConfig, cli.merged_config([str(REPO / "config.yaml"), *configs]))
    table = variants.plan(cfg)
    trained = table[table["reason"] == ""]
    assert counts["train_stable_variant"] == trained["series_id"].nunique() == 9
    assert counts["write_spec"] == 9 + 2  # and the corpus and study specs
    assert counts["decay_branch_variant"] == len(trained)
    for rule in ("plan_variants", "collect_variant_metrics", "fit_variants",
                 "plot_variants_envelope", "plot_variants_isoflop"):
        assert counts[rule] == 1, rule
    assert "train_stable_isoflop" not in counts and "fit_isoflop" not in counts


def test_default_study_plans_no_variant_job(tmp_path):
    result = snakemake(tmp_path, "-n", "--cores", "2", "--quiet", "rules")
    assert result.returncode == 0, result.stderr + result.stdout
    counts = job_counts(result.stdout + result.stderr)
    assert not [rule for rule in counts if "variant" in rule]
    assert math.isfinite(counts["train_stable_isoflop"])


@pytest.mark.slow
def test_tiny_phase_end_to_end(tmp_path):
    # the two variants (the dense model is the base study's), on a smaller first budget
    tiny = dict(SECTION, models=SECTION["models"][1:], budgets=[2.0e9, 1.0e10])
    section = tmp_path / "variants.yaml"
    section.write_text(json.dumps({"lr_transfer": {"enabled": False}, "variants": tiny}))
    result = snakemake(tmp_path, *TARGETS, "--cores", "2", "--configfile",
                       str(REPO / "tests" / "smoke.yaml"), str(section))
    assert result.returncode == 0, result.stderr[-4000:]
    for figure in TARGETS[1:]:
        assert (tmp_path / figure).stat().st_size > 20_000, figure
    runs = pd.read_csv(tmp_path / "results" / "variants" / "runs.csv")
    assert len(runs) == 2 * 3 * 2 and runs["loss"].between(0.5, 7.0).all()
    moe = runs[runs["variant"] == "moe"]
    assert (moe["N"] == moe["N_active"]).all() and (moe["N"] < moe["N_nonembedding"]).all()
    fit = json.loads((tmp_path / TARGETS[0]).read_text())
    assert list(fit["variants"]) == ["linear", "moe"]  # name order
    for v in fit["variants"].values():
        assert math.isfinite(v["isoflop"]["a"]) and v["isoflop"]["tokens_per_param"] > 0


def test_comparison_finds_alike_slopes_and_the_loss_gap():
    """Same exponents, a lower E: the loss gap is negative at every budget and the exponent
    difference's interval holds 0. A variant whose loss falls faster with compute is told apart."""
    runs = pd.concat([synthetic_runs(1.7, 400.0, "dense"), synthetic_runs(1.6, 400.0, "alike")])
    result = variants_analysis.fit(runs, n_boot=200)
    c = result["comparison"]
    assert c["reference"] == "dense"
    alike = c["variants"]["alike"]
    assert [g["C"] for g in alike["loss_gap"]] == [1e16, 1e17, 1e18]
    assert all(-0.1 < g["relative_gap"] < 0 for g in alike["loss_gap"])
    low, high = alike["exponent_difference"]["ci"]
    assert low <= 0 <= high and alike["verdict"] == "scale alike"
    # a steeper frontier: the loss falls by a further 7% per decade of compute (resampling the
    # 7-size ladders moves each budget's minimum by a few per cent, so smaller gaps stay open)
    steeper = synthetic_runs(1.7, 400.0, "steeper")
    steeper["loss"] *= (steeper["C"] / 1e16) ** -0.03
    result = variants_analysis.fit(pd.concat([synthetic_runs(1.7, 400.0, "dense"), steeper]),
                                   n_boot=200)
    diff = result["comparison"]["variants"]["steeper"]["exponent_difference"]
    assert diff["value"] == pytest.approx(-0.03, abs=2e-3)
    assert diff["ci"][1] < 0
    assert result["comparison"]["variants"]["steeper"]["verdict"] == "scale differently"
    assert any("steeper vs dense" in line for line in variants_analysis.summary_lines(result))
