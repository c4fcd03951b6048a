"""Downstream accuracy: the task from val.bin, the scorer against an oracle and a uniform model,
the loss -> accuracy sigmoid, training writing final_accuracy, the CLI, the recipe and the DAG."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import (
    REPO,
    job_counts,
    one_thread,  # noqa: F401 (an autouse fixture: one torch thread)
    snakemake,
    tiny_spec,
    write_spec,
    write_token_dir,
)
from scalinglab.cli import main as cli
from scalinglab.config import StudyConfig, from_dict
from scalinglab.errors import UserError
from scalinglab.phases import recipe
from scalinglab.training import downstream, metrics
from scalinglab.training import jobs as train
from scalinglab.training.downstream import DownstreamConfig
from scalinglab.training.schedule import Schedule

SMALL = DownstreamConfig(enabled=True, items=12, context_tokens=5, continuation_tokens=3,
                         choices=4)


def counting_tokens(n: int = 1000) -> np.ndarray:
    """Token t at position t (mod 997): each span is recognisable by its first token."""
    return (np.arange(n) % 997).astype(np.uint16)


# -- the task ------------------------------------------------------------------------------------
def test_task_is_deterministic_with_the_truth_where_the_rng_put_it():
    tokens = counting_tokens()
    task = downstream.build_task(tokens, SMALL)
    again = downstream.build_task(tokens, SMALL)
    np.testing.assert_array_equal(task.sequences, again.sequences)
    assert task.sequences.shape == (12, 4, 8) and task.chance == 0.25
    expected = np.random.default_rng(downstream.TASK_SEED).integers(0, 4, size=12)
    np.testing.assert_array_equal(task.answer, expected)
    stride = 1000 // 12  # 83: evenly spaced, non-overlapping spans of 8 tokens
    for i in range(12):
        start = i * stride
        for c in range(4):  # every candidate shares the item's context
            np.testing.assert_array_equal(task.sequences[i, c, :5], np.arange(start, start + 5))
        truth = task.sequences[i, task.answer[i], 5:]
        np.testing.assert_array_equal(truth, np.arange(start + 5, start + 8))
        # the distractors are the continuations of items i + 3, i + 6, i + 9 (mod 12)
        others = sorted(int(task.sequences[i, c, 5]) for c in range(4) if c != task.answer[i])
        assert others == sorted(((i + j * 3) % 12) * stride + 5 for j in (1, 2, 3))


def test_too_small_val_split_names_the_key_and_the_counts():
    with pytest.raises(UserError, match=r"downstream\.items: 12 items of 8 tokens need 96 "
                                        r"validation tokens, the split has 90"):
        downstream.build_task(counting_tokens(90), SMALL)


def test_plan_study_refuses_a_split_too_small_before_any_run_trains(tmp_path, capsys):
    from scalinglab.config import to_dict

    cfg = from_dict(StudyConfig, cli.merged_config([str(REPO / "config.yaml")]))
    assert cfg.downstream.enabled  # the default study scores its branches
    (tmp_path / "study.json").write_text(json.dumps(to_dict(cfg)))
    meta = {"train_tokens": 10**9, "val_tokens": 400 * 80 - 1}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    args = ["isoflop", "plan", "--config", str(tmp_path / "study.json"), "--meta",
            str(tmp_path / "meta.json"), "--out", str(tmp_path / "plan.csv")]
    assert cli.main(args) == 2
    assert "downstream.items: 400 items of 80 tokens need 32,000" in capsys.readouterr().err
    assert not (tmp_path / "plan.csv").exists()
    meta["val_tokens"] = 400 * 80
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    assert cli.main(args) == 0


@pytest.mark.parametrize("section, key", [
    ({"choices": 1}, "downstream.choices"),
    ({"items": 0}, "downstream.items"),
    ({"items": 3, "choices": 4}, "downstream.items"),
    ({"continuation_tokens": -2}, "downstream.continuation_tokens"),
    ({"context_tokens": 100, "enabled": True}, "downstream.context_tokens"),
    ({"typo": 1}, "downstream.typo"),
])
def test_bad_config_keys_are_user_errors_naming_the_key(section, key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        from_dict(StudyConfig, {"model": {"block_size": 64, "sizes": [
            {"n_layer": 1, "n_embd": 8, "n_head": 1}]}, "downstream": section})


def test_a_task_longer_than_the_context_is_fine_while_downstream_is_off():
    cfg = from_dict(StudyConfig, {"model": {"block_size": 32, "sizes": [
        {"n_layer": 1, "n_embd": 8, "n_head": 1}]}, "downstream": {"enabled": False}})
    assert cfg.downstream.span == 80


# -- the scorer ----------------------------------------------------------------------------------
class Oracle(torch.nn.Module):
    """All probability on token t + 1 after token t (counting_tokens' rule)."""

    def forward(self, idx, last=None):
        logits = torch.full((*idx.shape, 997), -1e4)
        logits.scatter_(-1, ((idx + 1) % 997).unsqueeze(-1), 0.0)
        return logits[:, -last:] if last else logits, None


class Uniform(torch.nn.Module):
    def forward(self, idx, last=None):
        return torch.zeros(idx.shape[0], last or idx.shape[1], 997), None


def test_an_oracle_scores_one_and_a_uniform_model_scores_chance_exactly():
    task = downstream.build_task(counting_tokens(), SMALL)
    oracle, uniform = Oracle().train(), Uniform()
    assert downstream.accuracy(oracle, task, "cpu", batch=5) == 1.0
    assert oracle.training  # put back in training mode
    # four-way ties everywhere: 1/4 credit each, whatever position the truth has
    assert downstream.accuracy(uniform, task, "cpu", batch=7) == 0.25


def test_ties_share_the_credit():
    scores = np.array([[1.0, 1.0, 0.0], [2.0, 1.0, 2.0], [0.0, 3.0, 1.0]])
    # item 0: truth 0 in a 2-way tie (1/2); item 1: truth 1 not best (0); item 2: truth 1 best
    assert downstream.score_choices(scores, np.array([0, 1, 1])) == pytest.approx(0.5)


# -- the sigmoid ---------------------------------------------------------------------------------
TRUE = {"top": 0.8, "k": 3.0, "L_mid": 4.0}


def synthetic(noise: float = 0.0, n: int = 18, seed: int = 0):
    rng = np.random.default_rng(seed)
    loss = np.linspace(2.5, 6.0, n)
    acc = downstream.sigmoid(loss, 0.25, TRUE["top"], TRUE["k"], TRUE["L_mid"])
    return loss, acc + noise * rng.standard_normal(n)


def test_sigmoid_fit_recovers_known_parameters():
    loss, acc = synthetic()
    fit = downstream.fit_sigmoid(loss, acc, 0.25, n_boot=20)
    for name, value in TRUE.items():
        assert fit[name] == pytest.approx(value, abs=1e-3), name
    assert fit["n_points"] == 18 and fit["rmse"] < 1e-6
    assert downstream.predict(fit, 4.0) == pytest.approx(0.25 + 0.55 / 2, abs=1e-4)


def test_noisy_sigmoid_interval_holds_the_truth_and_nan_rows_are_left_out():
    # a bootstrap of 18 points covers less than its nominal 95% (measured over noise seeds
    # 0-19: top 17/20, k and L_mid 18/20); this draw is one of the covered ones
    loss, acc = synthetic(noise=0.01, seed=2)
    loss = np.append(loss, [np.nan, 3.0])
    acc = np.append(acc, [0.5, np.nan])
    fit = downstream.fit_sigmoid(loss, acc, 0.25, n_boot=300, seed=1)
    assert fit["n_points"] == 18
    for name, value in TRUE.items():
        low, high = fit["ci"][name]
        assert low <= value <= high, (name, low, high)
    low, high = downstream.predict_interval(fit, [3.9, 4.1])
    truth = [downstream.sigmoid(x, 0.25, **{"top": 0.8, "k": 3.0, "l_mid": 4.0})
             for x in (4.1, 3.9)]
    assert low <= truth[0] < truth[1] <= high  # the higher loss gives the lower end
    point = downstream.predict(fit, 4.0)
    assert low < point < high


def test_fewer_than_four_points_is_a_user_error():
    with pytest.raises(UserError, match=r"3 runs with both a finite loss and an accuracy"):
        downstream.fit_sigmoid([3.0, 4.0, 5.0, float("nan")], [0.5, 0.4, 0.3, 0.2], 0.25)


# -- training writes the accuracy ----------------------------------------------------------------
def trained_stable(tmp_path: Path) -> tuple[Path, dict, Path, Path]:
    """A tiny series with the task on, its stable run trained: (tokens, spec, spec path, the
    checkpoint of branch C1)."""
    tokens = write_token_dir(tmp_path / "tokens")
    spec = tiny_spec(stable_steps=16, branches=((16, 20, "C1"),))
    spec["downstream"] = {"enabled": True, "items": 20, "context_tokens": 12,
                          "continuation_tokens": 4, "choices": 4}
    spec_path = write_spec(tmp_path / "spec.json", spec)
    train.train_stable(spec_path, tokens, tmp_path / "stable")
    return tokens, spec, spec_path, tmp_path / "stable" / "branch-C1.pt"


def test_a_trained_branch_records_its_accuracy_and_runs_csv_carries_it(tmp_path):
    tokens, spec, spec_path, checkpoint = trained_stable(tmp_path)
    train.decay_branch(spec_path, "C1", checkpoint, tokens, tmp_path / "C1")
    record = json.loads((tmp_path / "C1" / "run.json").read_text())
    assert 0.0 <= record["final_accuracy"] <= 1.0
    assert record["accuracy_chance"] == 0.25
    # the same number from the same weights trained in one go, scored here
    straight = train.Trainer(spec, tokens, torch.device("cpu"))
    straight.run(Schedule(kind="wsd", warmup_steps=4, total_steps=20, decay_start=16), 20)
    task = downstream.task_from_file(tokens / "val.bin", "uint16",
                                     DownstreamConfig(**spec["downstream"]))
    assert downstream.accuracy(straight.model, task, "cpu") == record["final_accuracy"]
    row = metrics.run_row(record)
    assert row["accuracy"] == record["final_accuracy"] and row["chance"] == 0.25

    # a spec made before the downstream key existed still trains, and records nulls
    del spec["downstream"]
    old_path = write_spec(tmp_path / "old.json", spec)
    train.decay_branch(old_path, "C1", checkpoint, tokens, tmp_path / "old")
    old = json.loads((tmp_path / "old" / "run.json").read_text())
    assert old["final_accuracy"] is None and old["accuracy_chance"] is None
    assert old["final_val_loss"] == record["final_val_loss"]  # the task changes no training
    assert math.isnan(metrics.run_row(old)["accuracy"])


def test_under_two_processes_rank_0_scores_the_branch(tmp_path):
    import shlex
    import subprocess

    from test_ddp import _env

    tokens, _, spec_path, checkpoint = trained_stable(tmp_path)
    train.decay_branch(spec_path, "C1", checkpoint, tokens, tmp_path / "one")
    args = ["train", "branch", "--spec", spec_path, "--label", "C1", "--checkpoint", checkpoint,
            "--data-dir", tokens, "--out-dir", tmp_path / "two", "--threads", "2",
            "--processes", "2"]
    done = subprocess.run(f"python -m scalinglab {shlex.join(str(a) for a in args)}",
                          shell=True, env=_env(), capture_output=True, text=True, timeout=300,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = (json.loads((tmp_path / d / "run.json").read_text()) for d in ("one", "two"))
    assert two["processes"] == 2 and two["accuracy_chance"] == 0.25
    # the weights agree to ~1e-4 (tests/test_ddp.py): at most one item of 20 may flip
    assert two["final_accuracy"] == pytest.approx(one["final_accuracy"], abs=0.05 + 1e-9)


# -- the fit verb, the recipe and its check ------------------------------------------------------
def synthetic_runs(path: Path) -> Path:
    loss, acc = synthetic(noise=0.005, seed=3)
    runs = pd.DataFrame({"run_id": [f"r{i}" for i in range(len(loss))], "loss": loss,
                         "accuracy": acc, "chance": 0.25, "diverged": False})
    # a diverged run: NaN loss and accuracy, left out of the fit
    runs.loc[len(runs)] = {"run_id": "bad", "loss": np.nan, "accuracy": np.nan,
                           "chance": 0.25, "diverged": True}
    runs.to_csv(path, index=False)
    return path


def test_downstream_fit_cli_writes_the_fit_and_the_figure(tmp_path):
    runs = synthetic_runs(tmp_path / "runs.csv")
    out, figure = tmp_path / "fits" / "downstream.json", tmp_path / "downstream.png"
    assert cli.main(["downstream", "fit", "--runs", str(runs), "--out", str(out), "--figure",
                     str(figure), "--bootstrap", "100"]) == 0
    fit = json.loads(out.read_text())
    assert fit["n_points"] == 18 and fit["chance"] == 0.25
    assert fit["L_mid"] == pytest.approx(TRUE["L_mid"], abs=0.05)
    assert fit["top"] == pytest.approx(TRUE["top"], abs=0.03)
    assert len(fit["points"]["loss"]) == 18 and len(fit["bootstrap"]["samples"]) > 90
    assert set(fit["ci"]) == {"top", "k", "L_mid"}
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 10_000


def test_downstream_fit_cli_without_accuracies_exits_2_naming_the_column(tmp_path, capsys):
    runs = tmp_path / "runs.csv"
    pd.DataFrame({"loss": [3.0, 4.0], "C": [1, 2]}).to_csv(runs, index=False)
    args = ["downstream", "fit", "--runs", str(runs), "--out", str(tmp_path / "f.json"),
            "--figure", str(tmp_path / "f.png")]
    assert cli.main(args) == 2
    assert "no column 'accuracy'" in capsys.readouterr().err
    assert not (tmp_path / "f.json").exists()


def test_recipe_predicts_the_accuracy_and_validate_checks_it(tmp_path):
    from test_recipe import compute_fit, study

    fit = downstream.fit_sigmoid(*synthetic(noise=0.005, seed=3), 0.25, n_boot=100)
    laws = compute_fit(n_boot=100)
    compute = recipe.validation_compute(study())
    plain = recipe.make_recipe(laws, None, compute)
    assert "predicted_accuracy" not in plain
    out = recipe.make_recipe(laws, None, compute, fit)
    assert out["predicted_accuracy"] == downstream.predict(fit, out["predicted_loss"])
    assert out["predicted_accuracy_ci"] == downstream.predict_interval(
        fit, out["predicted_loss_ci"])
    low, high = out["predicted_accuracy_ci"]
    assert low <= out["predicted_accuracy"] <= high and out["accuracy_chance"] == 0.25

    record = {"final_val_loss": out["predicted_loss"], "final_accuracy": 0.5,
              "run_id": "val-C4e13_C4e13", "D": 10**6,
              "spec": {"N": 51000, "model": {"n_layer": 2, "n_embd": 48, "n_head": 2,
                                             "block_size": 64},
                       "training": {"lr": 3e-3, "batch_size": 16}}}
    result = recipe.validate(out, record)
    assert result["actual_accuracy"] == 0.5
    assert result["accuracy_error_points"] == pytest.approx(
        100 * (0.5 - out["predicted_accuracy"]))
    assert result["abs_accuracy_error_points"] == abs(result["accuracy_error_points"])
    assert result["predicted_accuracy_ci"] == [low, high]
    # a run scored without downstream (or a recipe without the fit): the loss check only
    assert "actual_accuracy" not in recipe.validate(out, dict(record, final_accuracy=None))
    assert "actual_accuracy" not in recipe.validate(plain, record)

    # `plan` reads downstream.json when the study behind the compute fit has downstream on ...
    fits = tmp_path / "fits"
    fits.mkdir()
    (fits / "downstream.json").write_text(json.dumps(fit))

    def plan(laws: dict) -> dict:
        (fits / "compute_optimal.json").write_text(json.dumps(laws))
        assert cli.main(["recipe", "make", "--fits", str(fits), "--compute", str(compute),
                         "--hparams", "config", "--out", str(tmp_path / "recipe.json")]) == 0
        return json.loads((tmp_path / "recipe.json").read_text())

    assert laws["study"]["downstream"]["enabled"] is False
    on = json.loads(json.dumps(laws))
    on["study"]["downstream"].update(enabled=True, context_tokens=48, continuation_tokens=16)
    assert plan(on)["predicted_accuracy"] == pytest.approx(out["predicted_accuracy"])
    # ... and not when it is off: a fit left in the folder by an earlier study is ignored
    assert "predicted_accuracy" not in plan(laws)


def test_recipe_inputs_take_the_downstream_fit_only_when_enabled():
    from test_recipe import study

    assert "downstream" not in recipe.RecipeFiles(study()).inputs()
    on = study(downstream={"enabled": True, "context_tokens": 48})
    assert recipe.RecipeFiles(on).inputs()["downstream"] == "results/fits/downstream.json"


# -- the workflow --------------------------------------------------------------------------------
@pytest.mark.parametrize("enabled", [True, False])
def test_dry_run_plans_fit_downstream_once_when_enabled(tmp_path, enabled):
    extra = tmp_path / "downstream.yaml"
    extra.write_text(json.dumps({"downstream": {"enabled": enabled, "context_tokens": 24,
                                                "continuation_tokens": 8},
                                 "validation": {"enabled": True}}))
    result = snakemake(tmp_path, "-n", "--cores", "2", "--quiet", "rules", "--configfile",
                       str(REPO / "tests" / "smoke.yaml"), str(extra))
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout + result.stderr)
    assert counts.get("fit_downstream", 0) == (1 if enabled else 0)
    assert counts["make_recipe"] == counts["fit_validation"] == 1


def test_only_the_isoflop_and_validation_phases_carry_the_task():
    from scalinglab.phases import hparams, recipe, study

    cfg = from_dict(StudyConfig, cli.merged_config([str(REPO / "config.yaml")]))
    assert cfg.downstream.enabled
    table = study.plan_isoflop(cfg)
    spec = study.series_spec(cfg, table, table["series_id"].iloc[0]).to_dict()
    assert spec["downstream"]["items"] == cfg.downstream.items
    validation = recipe.validation_spec(cfg, {
        "shape": {"n_layer": 2, "n_embd": 32, "n_head": 2}, "steps": 400, "lr": 1e-2,
        "batch_size": 16, "compute": 1e12})
    assert validation["downstream"]["items"] == cfg.downstream.items
    # off: no spec carries a task
    off = from_dict(StudyConfig, cli.merged_config([str(REPO / "config.yaml")]) | {
        "downstream": {"enabled": False}})
    assert "downstream" not in study.series_spec(off, table, table["series_id"].iloc[0]).to_dict()
    sweep = from_dict(StudyConfig, cli.merged_config([str(REPO / "config.yaml"),
                                                  str(REPO / "workflow/configs/hparams.yaml")]))
    runs = hparams.plan(sweep)
    assert "downstream" not in study.series_spec(sweep, runs, runs["series_id"].iloc[0]).to_dict()
