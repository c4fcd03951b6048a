"""WSD vs cosine: the run table, branch shapes in the spec, and compute_saving_ratio arithmetic."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from helpers import read_metrics, tiny_spec, write_spec, write_token_dir
from scalinglab.config import StudyConfig, from_dict
from scalinglab.errors import UserError
from scalinglab.phases import wsd_vs_cosine
from scalinglab.training import jobs as train
from scalinglab.training.schedule import wsd_factor

SECTION = {"enabled": True, "sizes": [{"n_layer": 1, "n_embd": 8, "n_head": 1},
                                      {"n_layer": 1, "n_embd": 16, "n_head": 2}],
           "budgets": [1.0e9, 2.0e9, 4.0e9], "decay_fractions": [0.2, 0.1],
           "decay_shapes": ["linear", "1-sqrt"], "eval_every": 10}


def config(section=None) -> StudyConfig:
    return from_dict(StudyConfig, {
        "tokenizer": {"vocab_size": 300},
        "model": {"block_size": 32, "sizes": [{"n_layer": 1, "n_embd": 8, "n_head": 1}]},
        "training": {"batch_size": 8, "warmup_tokens": 1024},
        "isoflop": {"budgets": [4e9]},
        "wsd_vs_cosine": dict(SECTION, **(section or {}))})


def test_plan_has_a_wsd_series_and_a_cosine_series_per_size():
    table = wsd_vs_cosine.plan(config())
    wsd, cos = table[table["kind"] == "wsd"], table[table["kind"] == "cosine"]
    assert wsd["series_id"].nunique() == 2 and cos["series_id"].nunique() == 2
    assert len(wsd) == 2 * 3 * 2 * 2  # sizes x budgets x fractions x shapes
    assert len(cos) == 2 * 3
    assert (cos["decay_start"] == 0).all() and (cos["stable_steps"] == 0).all()
    assert (wsd.groupby("series_id")["label"].apply(set).map(len) == 12).all()
    row = wsd[(wsd["C"] == 2e9) & (wsd["decay_fraction"] == 0.1) & (wsd["n_embd"] == 8)
              & (wsd["decay_shape"] == "1-sqrt")].iloc[0]
    assert row["label"] == "C2e9-f0.1-1-sqrt"
    assert row["decay_start"] == row["steps"] - round(0.1 * row["steps"])
    # the stable run goes as far as the latest branch point of any variant: 10% of the top budget
    top = wsd[(wsd["C"] == 4e9) & (wsd["n_embd"] == 8)]["steps"].iloc[0]
    assert row["stable_steps"] == top - round(0.1 * top)
    assert wsd["main"].sum() == 2 * 3  # (0.2, linear) per size and budget


def test_wsd_branches_carry_their_shape_and_cosine_runs_their_schedule():
    cfg = config()
    table = wsd_vs_cosine.plan(cfg)
    sid = table[table["kind"] == "wsd"]["series_id"].iloc[0]
    spec = wsd_vs_cosine.series_spec(cfg, table, sid).to_dict()
    shapes = {b["label"]: b["decay_shape"] for b in spec["branches"]}
    assert shapes["C1e9-f0.2-linear"] == "linear" and shapes["C1e9-f0.2-1-sqrt"] == "1-sqrt"
    assert spec["schedule"]["kind"] == "wsd" and spec["training"]["eval_every"] == 10
    cos_id = table[table["kind"] == "cosine"]["series_id"].iloc[0]
    cos = wsd_vs_cosine.series_spec(cfg, table, cos_id).to_dict()
    assert cos["schedule"]["kind"] == "cosine"
    assert cos["schedule"]["final_lr_ratio"] == 0.1
    assert cos["stable_steps"] == 0 and all(b["decay_start"] == 0 for b in cos["branches"])


@pytest.mark.parametrize(("section", "key"), [
    ({"sizes": [{"n_layer": 1, "n_embd": 8, "n_head": 1}]}, "wsd_vs_cosine.sizes"),
    ({"budgets": [1e9]}, "wsd_vs_cosine.budgets"),
    ({"decay_shapes": ["multistep"]}, "wsd_vs_cosine.decay_shapes"),
    ({"sizes": [{"n_layer": 1, "n_embd": 8, "n_head": 3},
                {"n_layer": 1, "n_embd": 16, "n_head": 2}]}, "wsd_vs_cosine.sizes[0]"),
])
def test_bad_section_names_its_key(section, key):
    with pytest.raises(UserError) as err:
        config(section)
    assert key in str(err.value)


def test_budget_inside_the_warmup_names_its_key():
    with pytest.raises(UserError, match=r"wsd_vs_cosine\.budgets\[0\]"):
        wsd_vs_cosine.plan(config({"budgets": [1e7, 4e9]}))


def hand_table() -> pd.DataFrame:
    """One size, 1 FLOP per token, 1 token per step: cosine runs of 100, 200 and 400 steps; WSD
    branches decaying over the last 20% (main) or 10%."""
    rows = []
    for steps in (100, 200, 400):
        rows.append({"kind": "cosine", "series_id": "cos", "steps": steps, "decay_start": 0,
                     "decay_fraction": float("nan"), "decay_shape": "cosine", "C": steps,
                     "C_actual": steps, "main": True, "loss": 3.0 - steps / 1000})
        for fraction in (0.2, 0.1):
            rows.append({"kind": "wsd", "series_id": "wsd", "steps": steps,
                         "decay_start": steps - round(fraction * steps),
                         "decay_fraction": fraction, "decay_shape": "linear", "C": steps,
                         "C_actual": steps, "main": fraction == 0.2,
                         "loss": (3.0 - steps / 1000) * (1.01 if fraction == 0.2 else 1.02)})
    table = pd.DataFrame(rows).assign(batch_tokens=1, flops_per_token=1.0, n_layer=1, n_embd=8,
                                      n_head=1, N=100, D=lambda t: t["steps"], reason="", lr=1e-2,
                                      run_id=lambda t: [f"r{i}" for i in range(len(t))])
    table["stable_steps"] = table.groupby("series_id")["decay_start"].transform("max")
    return table


def test_compute_saving_ratio_arithmetic():
    table = hand_table()
    assert wsd_vs_cosine.variant_flops(table, "cosine") == 700
    # stable to step 320, then decays of 20 + 40 + 80 steps
    assert wsd_vs_cosine.variant_flops(table, "wsd", 0.2, "linear") == 320 + 140
    assert wsd_vs_cosine.variant_flops(table, "wsd", 0.1, "linear") == 360 + 70
    fit = wsd_vs_cosine.analyse(table)
    assert fit["compute_saving_ratio"] == pytest.approx(700 / 460)
    assert fit["main"] == {"decay_fraction": 0.2, "decay_shape": "linear"}
    assert fit["mean_gap_rel"] == pytest.approx(0.01)
    assert [g["gap_rel"] for g in fit["gap_per_budget"]] == pytest.approx([0.01] * 3)
    by_fraction = {v["decay_fraction"]: v for v in fit["ablations"]["decay_fraction"]}
    assert by_fraction[0.1]["compute_saving_ratio"] == pytest.approx(700 / 430)
    assert by_fraction[0.1]["mean_gap_rel"] == pytest.approx(0.02)
    # every branch of every variant from one stable run: 360 + 140 + 70
    assert fit["flops"]["wsd_with_every_ablation_branch"] == 570


def test_ratio_grows_with_the_number_of_budgets():
    # m budgets C, 2C, ..., mC: cosine sum(C) over stable (1 - f) mC plus decays f sum(C)
    def ratio(m, f=0.1):
        cosine = m * (m + 1) / 2
        return cosine / ((1 - f) * m + f * cosine)

    assert ratio(3) < 2 < ratio(8) and ratio(8) > 3
    assert math.isclose(ratio(8), 36 / 10.8)


def test_branch_shape_in_the_spec_sets_the_decay(tmp_path):
    """decay-branch follows a branch's own decay_shape, not the spec's (train.make_schedule)."""
    data = write_token_dir(tmp_path / "tokens")
    spec = tiny_spec(stable_steps=16, branches=((16, 20, "lin"), (16, 20, "sqrt")))
    spec["training"]["eval_every"] = 1
    spec["branches"][1]["decay_shape"] = "1-sqrt"
    path = write_spec(tmp_path / "spec.json", spec)
    train.train_stable(path, data, tmp_path / "stable")
    for label in ("lin", "sqrt"):
        train.decay_branch(path, label, tmp_path / "stable" / f"branch-{label}.pt", data,
                           tmp_path / label)
    for label, shape in (("lin", "linear"), ("sqrt", "1-sqrt")):
        rows = [r for r in read_metrics(tmp_path / label / "metrics.jsonl") if r["step"] > 16]
        # a row at step s reports the LR of update s - 1
        expected = [1e-2 * wsd_factor(r["step"] - 1, warmup_steps=4, total_steps=20,
                                      decay_start=16, shape=shape) for r in rows]
        assert len(rows) == 4 and [r["lr"] for r in rows] == pytest.approx(expected)
    assert json.loads((tmp_path / "sqrt" / "run.json").read_text())["kind"] == "branch"
