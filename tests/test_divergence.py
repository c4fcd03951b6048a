"""Divergence: a run whose loss blows up stops early, is marked, still writes every output, and
is a failed point for the fits; a healthy run is marked not diverged."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import (
    one_thread,  # noqa: F401 (an autouse fixture: one torch thread)
    read_metrics,
    tiny_spec,
    write_spec,
    write_token_dir,
)
from scalinglab.errors import UserError
from scalinglab.phases import lr_transfer
from scalinglab.plots import study as plots
from scalinglab.training import checkpoint, divergence, jobs, metrics
from scalinglab.training.trainer import Trainer

LN64 = math.log(64)  # tiny_spec's vocabulary
BRANCHES = ((4, 6, "C0"), (16, 20, "C1"), (24, 30, "C2"))



@pytest.fixture()
def tokens(tmp_path):
    return write_token_dir(tmp_path / "tokens")


def _record(path) -> dict:
    return json.loads(path.read_text())


def _train_series(spec, tokens, tmp_path) -> dict:
    """Stable run and every decay branch, as the workflow runs them; run.json by label."""
    spec_path = write_spec(tmp_path / "spec.json", spec)
    jobs.train_stable(spec_path, tokens, tmp_path / "stable")
    records = {"stable": _record(tmp_path / "stable" / "run.json")}
    for _, _, label in BRANCHES:
        jobs.decay_branch(spec_path, label, tmp_path / "stable" / f"branch-{label}.pt", tokens,
                          tmp_path / label)
        records[label] = _record(tmp_path / label / "run.json")
    return records


def _nan_from_step(monkeypatch, first_bad_step: int) -> None:
    """The loss of every step from `first_bad_step` on reads NaN (the weights stay healthy: only
    the loop's reading of the loss is under test)."""
    real_step = Trainer.train_step

    def step(self, factor):
        loss = real_step(self, factor)
        return loss * float("nan") if self.step >= first_bad_step else loss

    monkeypatch.setattr(Trainer, "train_step", step)


# -- the rule --------------------------------------------------------------------------------------
def test_rule_on_exact_values():
    assert divergence.reason(float("nan"), None, 4.0, 64) == "train loss is nan"
    assert divergence.reason(3.0, float("inf"), 4.0, 64) == "val loss is inf"
    # the limit is max(initial loss, ln vocab) + 1 nat
    assert divergence.reason(LN64 + 0.99, 2.0, 3.0, 64) is None
    assert divergence.reason(LN64 + 1.01, 2.0, 3.0, 64).startswith("train loss 5.169 > 5.159")
    assert divergence.reason(6.9, None, 6.0, 64) is None  # an init above ln vocab raises it
    assert divergence.reason(7.1, None, 6.0, 64) is not None
    assert divergence.reason(LN64 + 1.01, None, None, 64) is not None  # first step unknown
    assert divergence.reason(LN64 + 2, None, 3.0, 64, margin=3.0) is None
    assert divergence.record(None) == {"diverged": False, "diverged_step": None,
                                       "diverged_reason": None}
    assert divergence.record({"step": 12, "reason": "train loss is nan"}) == {
        "diverged": True, "diverged_step": 12, "diverged_reason": "train loss is nan"}


# -- training --------------------------------------------------------------------------------------
def test_healthy_run_is_marked_not_diverged(tokens, tmp_path):
    spec = tiny_spec(stable_steps=8, branches=((8, 10, "C1"),))
    spec_path = write_spec(tmp_path / "spec.json", spec)
    jobs.train_stable(spec_path, tokens, tmp_path / "stable")
    jobs.decay_branch(spec_path, "C1", tmp_path / "stable" / "branch-C1.pt", tokens,
                      tmp_path / "C1")
    for folder in ("stable", "C1"):
        record = _record(tmp_path / folder / "run.json")
        assert record["diverged"] is False and record["diverged_step"] is None
        assert not any(row["diverged"] for row in read_metrics(tmp_path / folder /
                                                                "metrics.jsonl"))
    assert math.isfinite(_record(tmp_path / "C1" / "run.json")["final_val_loss"])
    # the first step's loss rides along in the checkpoint, for the branch's rule
    state = torch.load(tmp_path / "stable" / "branch-C1.pt", weights_only=True)
    assert state["initial_loss"] == pytest.approx(LN64, abs=0.3)


def test_absurd_lr_stops_early_and_every_branch_finishes_diverged(tokens, tmp_path):
    spec = tiny_spec(stable_steps=24, branches=BRANCHES)
    spec["training"]["lr"] = 1e3
    records = _train_series(spec, tokens, tmp_path)

    stable = records["stable"]
    assert stable["diverged"] is True
    assert stable["diverged_step"] == stable["steps"] == 4  # the first evaluation, not step 24
    assert stable["diverged_reason"]
    rows = read_metrics(tmp_path / "stable" / "metrics.jsonl")
    assert rows[-1]["step"] == 4 and rows[-1]["diverged"] is True
    assert rows[-1]["diverged_reason"] == stable["diverged_reason"]
    assert not (tmp_path / "stable" / "resume.pt").exists()
    assert not (tmp_path / "stable" / "pending").exists()
    for _, _, label in BRANCHES:  # every branch point is at or after step 4: marks, no weights
        state = torch.load(tmp_path / "stable" / f"branch-{label}.pt", weights_only=True)
        assert state["diverged"]["step"] == 4 and "model" not in state
        branch = records[label]
        assert branch["diverged"] is True and branch["final_val_loss"] is None
        assert branch["diverged_reason"].startswith("the stable run diverged")
        assert read_metrics(tmp_path / label / "metrics.jsonl")[-1]["diverged"] is True


def test_nan_loss_stops_at_the_next_eval_and_earlier_branches_train(tokens, tmp_path,
                                                                      monkeypatch):
    _nan_from_step(monkeypatch, 10)  # eval_every=4: caught at step 12
    records = _train_series(tiny_spec(stable_steps=24, branches=BRANCHES), tokens, tmp_path)

    assert records["stable"]["diverged_step"] == 12
    assert records["stable"]["diverged_reason"] == "train loss is nan"
    assert [row["step"] for row in read_metrics(tmp_path / "stable" / "metrics.jsonl")] == \
        [4, 8, 12]
    # C0 branches off at step 4, before the blow-up: a real checkpoint, and its own run
    # (steps 4-6, where this injection leaves the loss alone) is healthy
    assert torch.load(tmp_path / "stable" / "branch-C0.pt", weights_only=True)["step"] == 4
    assert records["C0"]["diverged"] is False and records["C0"]["steps"] == 6
    for label in ("C1", "C2"):
        assert records[label]["diverged"] is True and records[label]["diverged_step"] == 12

    # runs.csv: the diverged runs are rows with diverged=True and no loss; the healthy one stays
    runs, curves = metrics.collect([tmp_path / "stable" / "run.json"],
                                   [tmp_path / label / "run.json" for _, _, label in BRANCHES])
    by_label = runs.set_index("label")
    assert by_label["diverged"].to_dict() == {"C0": False, "C1": True, "C2": True}
    assert math.isfinite(by_label.loc["C0", "loss"])
    assert by_label.loc[["C1", "C2"], "loss"].isna().all()
    stable_rows = curves[curves["kind"] == "stable"]
    assert stable_rows["diverged"].tolist() == [False, False, True]


def test_blow_up_between_evals_is_caught_at_the_next_check(tokens, tmp_path, monkeypatch):
    monkeypatch.setattr(divergence, "CHECK_EVERY", 5)
    _nan_from_step(monkeypatch, 7)
    spec = tiny_spec(stable_steps=24, branches=((16, 20, "C1"),))
    spec["training"]["eval_every"] = 100  # only the branch point and the end would evaluate
    spec_path = write_spec(tmp_path / "spec.json", spec)
    jobs.train_stable(spec_path, tokens, tmp_path / "stable")
    rows = read_metrics(tmp_path / "stable" / "metrics.jsonl")
    assert [(row["step"], row["diverged"]) for row in rows] == [(10, True)]  # not step 16
    jobs.decay_branch(spec_path, "C1", tmp_path / "stable" / "branch-C1.pt", tokens,
                      tmp_path / "C1")
    assert _record(tmp_path / "C1" / "run.json")["diverged_step"] == 10


def test_decay_branch_that_diverges_on_its_own_stops_early(tokens, tmp_path, monkeypatch):
    spec = tiny_spec(stable_steps=16, branches=((16, 28, "C1"),))
    spec_path = write_spec(tmp_path / "spec.json", spec)
    jobs.train_stable(spec_path, tokens, tmp_path / "stable")
    _nan_from_step(monkeypatch, 18)
    jobs.decay_branch(spec_path, "C1", tmp_path / "stable" / "branch-C1.pt", tokens,
                      tmp_path / "C1")
    record = _record(tmp_path / "C1" / "run.json")
    assert record["diverged"] is True and record["diverged_step"] == 20
    assert record["steps"] == 20 and record["final_val_loss"] is None


def test_a_divergence_mark_from_another_spec_is_refused(tokens, tmp_path):
    spec = tiny_spec(stable_steps=16, branches=((16, 20, "C1"),))
    checkpoint.save_diverged(tmp_path / "mark.pt", spec=spec, step=8,
                             reason="train loss is nan", metrics=[])
    other = dict(spec, training=dict(spec["training"], lr=5e-3))
    with pytest.raises(UserError, match="different spec"):
        Trainer(other, tokens, torch.device("cpu")).load(tmp_path / "mark.pt")


# -- the fits and figures --------------------------------------------------------------------------
def test_lr_transfer_honours_the_diverged_mark(tmp_path):
    record = {"run_id": "r", "D": 1024, "final_val_loss": 2.0, "diverged": True,
              "spec": {"parametrization": {"name": "mup"}, "seed": 0, "training": {"lr": 1.0},
                       "model": {"n_embd": 64, "n_layer": 2, "vocab_size": 64}}}
    (tmp_path / "run.json").write_text(json.dumps(record))
    assert lr_transfer.read_runs([tmp_path / "run.json"])["diverged"].tolist() == [True]


def test_isoflop_figure_draws_failed_runs(tmp_path):
    rows = [{"C": c, "N": n, "loss": 3.0 + (np.log(n) - 9) ** 2 / 10 + (c == 1e16),
             "diverged": False} for c in (1e15, 1e16) for n in (2e3, 8e3, 3e4, 1e5)]
    rows[3] |= {"loss": float("nan"), "diverged": True}
    rows[5] |= {"diverged": True}
    fit = {"a": 0.5, "budgets": [{"C": 1e15, "N_opt": 8e3, "loss_opt": 3.0},
                                 {"C": 1e16, "N_opt": 8e3, "loss_opt": 4.0}]}
    plots.isoflop(pd.DataFrame(rows), fit, str(tmp_path / "isoflop.png"))
    assert (tmp_path / "isoflop.png").read_bytes()[:4] == b"\x89PNG"
