"""The workflow: the planned jobs per rule, a tiny study end to end, lint and bad configs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from helpers import REPO, job_counts, snakemake
from scalinglab.cli.main import merged_config
from scalinglab.config import StudyConfig, from_dict
from scalinglab.phases.study import plan_isoflop, plan_predicted, trained_runs, trained_series

FIGURES = ["loss_curves.png", "isoflop.png", "compute_optimal.png"]




def test_dry_run_plans_one_stable_job_per_size_and_one_branch_per_run(tmp_path):
    result = snakemake(tmp_path, "-n", "--cores", "2", "--quiet", "rules")
    assert result.returncode == 0, result.stderr + result.stdout
    counts = job_counts(result.stdout + result.stderr)
    cfg = from_dict(StudyConfig, merged_config([str(REPO / "config.yaml")]))
    table = plan_isoflop(cfg)
    series = len(trained_series(table))
    assert series >= 5
    assert counts["train_stable_isoflop"] == series
    # resources.branch_jobs: series, one job per series, a rule per set of trained labels
    assert cfg.resources.branch_jobs == "series" and "decay_branch_isoflop" not in counts
    batches = {rule: n for rule, n in counts.items() if rule.startswith("decay_branches_isoflop")}
    assert sum(batches.values()) == series
    labels = trained_runs(table).groupby("series_id")["label"].apply(tuple)
    assert len(batches) == labels.nunique() > 1
    assert counts["write_spec"] == series + 2
    for rule in ("prepare_corpus", "train_tokenizer", "encode_corpus", "plan_study",
                 "collect_metrics", "fit_isoflop", "plot_loss_curves", "plot_isoflop",
                 "plot_compute_optimal", "fit_downstream", "fit_schedule_law"):  # downstream on
        assert counts[rule] == 1, rule


def test_single_figure_target_plans_only_what_it_needs(tmp_path):
    result = snakemake(tmp_path, "results/figures/loss_curves.png", "-n", "--cores", "2",
                       "--quiet", "rules")
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout + result.stderr)
    assert "fit_isoflop" not in counts
    assert "plot_isoflop" not in counts
    assert counts["plot_loss_curves"] == 1


@pytest.mark.slow
def test_smoke_study_end_to_end(tmp_path):
    # one noise seed: the checkpoint plans round 1 (a repeat of each optimum's nearest size)
    rounds = tmp_path / "rounds.yaml"
    # and two budgets that train nothing: the schedule law predicts their branches
    rounds.write_text("isoflop:\n  noise_seeds: 1\n  predicted_budgets: [5.3e+9, 9.2e+9]\n"
                      # one job decays each series' branches, round 1's too
                      "resources:\n  branch_jobs: series\n")
    config = str(REPO / "tests" / "smoke.yaml")
    result = snakemake(tmp_path, "--cores", "2", "--configfile", config, str(rounds))
    assert result.returncode == 0, result.stderr[-4000:]
    for name in FIGURES:
        figure = tmp_path / "results" / "figures" / name
        assert figure.stat().st_size > 10_000, name
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = pd.read_csv(tmp_path / "results" / "metrics" / "runs.csv")
    cfg = from_dict(StudyConfig, merged_config([str(REPO / "config.yaml"), config, str(rounds)]))
    expected = trained_runs(plan_isoflop(cfg))
    predicted = runs[runs["loss_source"] == "predicted"]
    assert sorted(predicted["run_id"]) == sorted(trained_runs(plan_predicted(cfg))["run_id"])
    assert sorted(predicted["C"].unique()) == [5.3e9, 9.2e9]
    runs = runs[runs["loss_source"] == "trained"]
    first = runs[runs["round"] == 0]
    assert sorted(first["run_id"]) == sorted(expected["run_id"])
    # round 0's branches were decayed by one job per series
    logs = tmp_path / "results" / "logs" / "decay_branches_isoflop"
    assert sorted(p.stem for p in logs.glob("*.log")) == sorted(expected["series_id"].unique())
    repeats = runs[runs["round"] == 1]
    assert len(repeats) >= 3 and (repeats["seed"] == cfg.seed + 1).all()
    assert repeats["run_id"].str.contains("-s1_").all()
    # round 1's series are planned by the checkpoint; one job each decayed theirs, writing
    # placeholders for the budgets the plan left out, which runs.csv does not take
    logs = tmp_path / "results" / "logs" / "decay_branches_isoflop_r1"
    assert sorted(p.stem for p in logs.glob("*.log")) == sorted(repeats["series_id"].unique())
    for sid in repeats["series_id"].unique():
        records = [json.loads(p.read_text()) for p in
                   (tmp_path / "results" / "runs" / "isoflop_r1" / sid).glob("*/run.json")]
        left_out = {r["run_id"] for r in records if r.get("trained") is False}
        assert left_out and not left_out & set(runs["run_id"])
    fit = json.loads((tmp_path / "results" / "fits" / "isoflop.json").read_text())
    assert fit["noise"]["sigma"] > 0 and fit["noise"]["points"]
    assert [r["round"] for r in fit["rounds"]] == [0, 1]
    assert fit["compute"]["trained_flops"] > 0
    extended = fit["with_predicted"]
    assert extended["n_predicted_points"] == len(predicted)
    saved = trained_runs(plan_predicted(cfg))["C_actual"].sum()
    assert extended["compute"]["independent_flops"] == pytest.approx(
        fit["compute"]["independent_flops"] + saved)
    assert extended["compute"]["compute_saving_ratio"] > fit["compute_saving_ratio"]
    assert runs["loss"].between(0.5, 7.0).all()  # ln(300) = 5.7 is the loss of a uniform guess
    for column in ("n_layer", "n_embd", "N", "N_total", "D", "C", "loss", "schedule",
                   "wall_seconds"):
        assert column in runs.columns
    assert (tmp_path / "results" / "fits" / "isoflop.json").exists()

    again = snakemake(tmp_path, "--cores", "2", "--configfile", config, str(rounds))
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr

    report = snakemake(tmp_path, "--configfile", config, str(rounds), "--report", "report.html")
    assert report.returncode == 0, report.stderr[-2000:]
    html = (tmp_path / "report.html").read_text(errors="replace")
    for name in FIGURES:
        assert name in html
    assert "IsoFLOP profiles" in html  # a caption made it into the report
    assert "the optimal size is" in html  # with each budget's interval in words

    # a changed learning rate is a new series: every training job, nothing upstream of it
    changed = tmp_path / "changed.yaml"  # merged over the smoke config, key by key
    changed.write_text("parametrization:\n  init_std: 0.03\n")
    plan = snakemake(tmp_path, "-n", "--cores", "2", "--quiet", "rules", "--configfile",
                     config, str(rounds), str(changed))
    counts = job_counts(plan.stdout + plan.stderr)
    assert "prepare_corpus" not in counts and "encode_corpus" not in counts
    assert counts["train_stable_isoflop"] == len(trained_series(plan_isoflop(cfg)))


def test_bad_config_exits_2_naming_the_key_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  lr: -0.1\n")
    result = subprocess.run(
        [sys.executable, "-m", "scalinglab", "check-config", str(REPO / "config.yaml"), str(bad)],
        capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert "training.lr" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "results").exists()


def test_missing_corpus_exits_2_naming_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("corpus:\n  source: files\n  paths: [does/not/exist/*.txt]\n")
    result = subprocess.run(
        [sys.executable, "-m", "scalinglab", "check-config", str(REPO / "config.yaml"), str(bad)],
        capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert "does/not/exist" in result.stderr


def test_snakemake_refuses_a_bad_config_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("isoflop:\n  budgets: [0]\n")
    result = snakemake(tmp_path, "--cores", "1", "--configfile", str(bad))
    assert result.returncode != 0
    assert "budgets" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.skipif(shutil.which("snakefmt", path=str(Path(sys.executable).parent)) is None,
                    reason="snakefmt is not installed")
def test_workflow_is_snakefmt_clean():
    rules = sorted(str(p) for p in (REPO / "workflow" / "rules").glob("*.smk"))
    result = subprocess.run([str(Path(sys.executable).parent / "snakefmt"), "--check",
                             str(REPO / "Snakefile"), *rules], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_workflow_is_lint_clean(tmp_path):
    result = snakemake(tmp_path, "--lint")
    assert result.returncode == 0, result.stdout + result.stderr
