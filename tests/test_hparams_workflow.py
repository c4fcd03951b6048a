"""The hyperparameter, schedule and recipe phases in the workflow: planned jobs per rule, and
(slow) a tiny study of every phase end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import REPO, job_counts, snakemake
from scalinglab.cli.main import merged_config
from scalinglab.config import StudyConfig, from_dict
from scalinglab.phases import critical_batch, hparams, wsd_vs_cosine

# every phase of issue 6 on, tiny, over the smoke study (lr_transfer off to keep it short)
TINY = """
lr_transfer: {enabled: false}
hparams:
  enabled: true
  budgets: [1.0e+9, 3.0e+9]
  lrs: [3.0e-3, 1.0e-2, 3.0e-2]
  batch_tokens: [128, 256]
critical_batch:
  enabled: true
  n_layer: 1
  n_embd: 16
  n_head: 2
  batch_tokens: [64, 128, 256]
  steps: 100
  eval_every: 10
  eval_tokens: 1024
wsd_vs_cosine:
  enabled: true
  sizes:
    - {n_layer: 1, n_embd: 8, n_head: 1}
    - {n_layer: 1, n_embd: 16, n_head: 2}
  budgets: [1.0e+9, 2.0e+9]
  decay_fractions: [0.2, 0.1]
  # one shape: the shape ablation's plan and fit have unit tests (tests/test_wsd_vs_cosine.py)
  decay_shapes: [linear]
  eval_every: 20
validation:
  enabled: true
"""

# WSD vs cosine alone, each schedule tuned over a 3-point LR grid: per size, 3 WSD stable runs with
# a branch per budget and 3 cosine series with a run per budget
TUNED = """
lr_transfer: {enabled: false}
wsd_vs_cosine:
  enabled: true
  sizes: [{n_layer: 1, n_embd: 8, n_head: 1}, {n_layer: 1, n_embd: 16, n_head: 2}]
  lr_grid: [5.0e-3, 1.0e-2, 2.0e-2]
  budgets: [1.0e+9, 2.0e+9]
  decay_fractions: [0.2]
  decay_shapes: [linear]
  eval_every: 20
"""
WSD_TARGETS = ("results/fits/wsd_vs_cosine.json", "results/figures/wsd_vs_cosine.png")



def tiny(tmp_path: Path, text: str = TINY) -> tuple[list[str], StudyConfig]:
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    files = [str(REPO / "tests" / "smoke.yaml"), str(path)]
    cfg = from_dict(StudyConfig, merged_config([str(REPO / "config.yaml"), *files]))
    return files, cfg



def test_dry_run_plans_the_jobs_of_every_phase(tmp_path):
    files, cfg = tiny(tmp_path)
    result = snakemake(tmp_path, "-n", "--cores", "2", "--quiet", "rules", "--configfile", *files)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout + result.stderr)
    hp = hparams.plan(cfg)
    hp_trained = hp[hp["reason"] == ""]
    assert counts["train_stable_hparams"] == hp_trained["series_id"].nunique() == 2 * 3 * 2
    assert counts["decay_branch_hparams"] == len(hp_trained) == 2 * 3 * 2
    assert counts["train_stable_critical_batch"] == len(critical_batch.plan(cfg)) == 3
    wvc = wsd_vs_cosine.plan(cfg)
    assert counts["train_stable_wsd"] == counts["train_stable_cosine"] == 2
    # sizes x budgets x decay fractions x decay shapes
    assert counts["decay_branch_wsd"] == (wvc["kind"] == "wsd").sum() == 2 * 2 * 2 * 1
    assert counts["decay_branch_cosine"] == (wvc["kind"] == "cosine").sum() == 2 * 2
    for rule in ("fit_hparams", "fit_critical_batch", "fit_wsd_vs_cosine", "fit_compute_optimal",
                 "make_recipe", "validation_spec", "train_stable_validation",
                 "decay_branch_validation", "fit_validation", "plan_hparams"):
        assert counts[rule] == 1, rule


@pytest.mark.slow
def test_tiny_study_of_every_phase_end_to_end(tmp_path):
    files, cfg = tiny(tmp_path)
    targets = ["results/fits/hparams.json", "results/fits/critical_batch.json",
               "results/fits/wsd_vs_cosine.json", "results/fits/validation.json"]
    result = snakemake(tmp_path, "--cores", "2", "--configfile", *files, "--", *targets,
                       timeout=1800)
    assert result.returncode == 0, result.stderr[-4000:]
    for name in ("hparams", "critical_batch", "wsd_vs_cosine", "prediction"):
        figure = tmp_path / "results" / "figures" / f"{name}.png"
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    fits = {name: json.loads((tmp_path / "results" / "fits" / f"{name}.json").read_text())
            for name in ("hparams", "critical_batch", "wsd_vs_cosine", "validation")}
    assert fits["hparams"]["n_runs"] == 2 * 3 * 2
    assert fits["hparams"]["laws"]["lr_vs_C"].get("n_points", 0) >= 2
    assert fits["wsd_vs_cosine"]["compute_saving_ratio"] > 1
    validation = fits["validation"]
    assert validation["extrapolation"] == pytest.approx(4.0)
    assert 0.5 < validation["actual_loss"] < 7.0
    # one run's range holds the law's interval (the backtest's error and the noise around it)
    (lo, hi), (r_lo, r_hi) = validation["predicted_loss_ci"], validation["predicted_loss_range"]
    assert r_lo <= lo <= validation["predicted_loss"] <= hi <= r_hi
    assert validation["inside_range"] == (r_lo <= validation["actual_loss"] <= r_hi)
    recipe = json.loads((tmp_path / "results" / "recipe.json").read_text())
    assert recipe["lr_source"] == "hparams.json lr_vs_C"
    assert validation["lr"] == pytest.approx(recipe["lr"])


def test_dry_run_of_a_tuned_wsd_vs_cosine(tmp_path):
    files, cfg = tiny(tmp_path, TUNED)
    result = snakemake(tmp_path, "-n", "--cores", "2", "--quiet", "rules", "--configfile", *files,
                       "--", *WSD_TARGETS)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout + result.stderr)
    # sizes x LRs stable runs on each side; sizes x LRs x budgets branches
    assert counts["train_stable_wsd"] == counts["train_stable_cosine"] == 2 * 3
    assert counts["decay_branch_wsd"] == counts["decay_branch_cosine"] == 2 * 3 * 2
    assert counts["fit_wsd_vs_cosine"] == 1
    assert len(wsd_vs_cosine.plan(cfg)) == 2 * 2 * 3 * 2


@pytest.mark.slow
def test_tuned_wsd_vs_cosine_end_to_end(tmp_path):
    files, _ = tiny(tmp_path, TUNED)
    result = snakemake(tmp_path, "--cores", "2", "--configfile", *files, "--", *WSD_TARGETS,
                       timeout=1800)
    assert result.returncode == 0, result.stderr[-4000:]
    figure = tmp_path / "results" / "figures" / "wsd_vs_cosine.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fit = json.loads((tmp_path / "results" / "fits" / "wsd_vs_cosine.json").read_text())
    assert fit["lr_grid"] == [5e-3, 1e-2, 2e-2]
    assert len(fit["tuned_per_budget"]) == 2 * 2
    for pair in fit["tuned_per_budget"]:
        for side in ("wsd", "cosine"):
            assert 5e-3 <= pair[f"best_lr_{side}"] <= 2e-2
            assert 0.5 < pair[f"loss_{side}"] < 7.0
        assert abs(pair["gap"]) < 0.5
    assert fit["compute"]["n_lrs"] == 3
    assert fit["compute"]["cosine_over_wsd"] == pytest.approx(fit["compute_saving_ratio"])
    assert fit["compute"]["cosine_over_wsd"] > 1
