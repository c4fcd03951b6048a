"""WSD vs cosine tuned over `wsd_vs_cosine.lr_grid`: the run table (schedules x budgets x LRs, one
WSD stable run per LR), the tuned analysis on synthetic losses with known optima, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from helpers import REPO
from scalinglab.cli import main as cli
from scalinglab.phases import study, wsd_vs_cosine, wsd_vs_cosine_tuned
from test_wsd_vs_cosine import config

GRID = [4e-3, 8e-3, 1.6e-2, 3.2e-2, 6.4e-2]
ONE_VARIANT = {"decay_fractions": [0.1], "decay_shapes": ["linear"]}


def tuned_config(**section):
    return config({**ONE_VARIANT, "lr_grid": GRID, **section})


def test_plan_trains_every_schedule_at_every_lr_wsd_one_stable_run_per_lr():
    cfg = tuned_config()
    table = wsd_vs_cosine.plan(cfg)
    wsd, cos = table[table["kind"] == "wsd"], table[table["kind"] == "cosine"]
    # 2 sizes x 3 budgets x 5 LRs, one WSD variant
    assert len(cos) == len(wsd) == 2 * 3 * 5
    assert cos["series_id"].nunique() == wsd["series_id"].nunique() == 2 * 5
    # each WSD series is one stable run at one LR, with a decay branch per budget
    assert (wsd.groupby("series_id")["lr"].nunique() == 1).all()
    assert (wsd.groupby("series_id")["label"].nunique() == 3).all()
    assert sorted(wsd["lr"].unique()) == GRID == sorted(cos["lr"].unique())
    assert (cos.groupby(["n_embd", "C"])["lr"].nunique() == 5).all()
    sid = wsd[wsd["lr"] == 8e-3]["series_id"].iloc[0]
    assert "-lr8e-03-" in sid
    spec = wsd_vs_cosine.series_spec(cfg, table, sid).to_dict()
    assert spec["training"]["lr"] == 8e-3 and spec["schedule"]["kind"] == "wsd"
    cos_id = cos[cos["lr"] == 6.4e-2]["series_id"].iloc[0]
    assert wsd_vs_cosine.series_spec(cfg, table, cos_id).to_dict()["training"]["lr"] == 6.4e-2


def test_untuned_plan_keeps_training_lr_and_its_ids():
    cfg = config(ONE_VARIANT)
    table = wsd_vs_cosine.plan(cfg)
    assert set(table["lr"]) == {cfg.training.lr}
    lr = study.format_number(cfg.training.lr)
    assert all(f"-lr{lr}-" in sid for sid in table["series_id"])
    # the same runs are the training.lr slice of a grid holding that LR
    grid = wsd_vs_cosine.plan(tuned_config(lr_grid=[cfg.training.lr / 2, cfg.training.lr,
                                                   cfg.training.lr * 2]))
    assert set(table["run_id"]) == set(grid[grid["lr"] == cfg.training.lr]["run_id"])


def optimum(kind: str, budget: float) -> float:
    """The synthetic best LR: cosine 2^0.3 x 1.6e-2, WSD half that (Hägele et al.'s finding);
    at the largest budget WSD's optimum lies below the grid."""
    if kind == "wsd" and budget == 4e9:
        return 2e-3
    return 1.6e-2 * 2**0.3 * (0.5 if kind == "wsd" else 1.0)


def synthetic(cfg, curvature: float = 0.05):
    """The plan with known losses: quadratic in log2 LR about `optimum`, WSD's floor 2% below
    cosine's, both falling with the budget."""
    finals = wsd_vs_cosine.plan(cfg)
    floor = 3.0 - 0.1 * np.log10(finals["C"] / 1e9) - 1e-6 * finals["n_embd"]
    floor = floor * np.where(finals["kind"] == "wsd", 0.98, 1.0)
    best = np.array([optimum(k, c) for k, c in zip(finals["kind"], finals["C"], strict=True)])
    finals["loss"] = floor + curvature * (np.log2(finals["lr"]) - np.log2(best)) ** 2
    return finals


def test_tuned_analysis_recovers_known_optima_inside_and_at_the_edge():
    finals = synthetic(tuned_config())
    fit = wsd_vs_cosine_tuned.analyse(finals)
    assert fit["lr_grid"] == GRID
    pairs = fit["tuned_per_budget"]
    assert len(pairs) == 2 * 3
    for p in pairs:
        assert p["best_lr_cosine"] == pytest.approx(optimum("cosine", p["C"]), rel=1e-9)
        assert p["grid_best_lr_cosine"] == 1.6e-2 and not p["cosine_at_grid_edge"]
        if p["C"] == 4e9:  # WSD's optimum below the grid: its lowest LR, flagged
            assert p["wsd_at_grid_edge"] and p["best_lr_wsd"] == 4e-3
            assert p["fit_loss_wsd"] == pytest.approx(p["loss_wsd"])
            continue
        assert not p["wsd_at_grid_edge"]
        assert p["best_lr_wsd"] == pytest.approx(optimum("wsd", p["C"]), rel=1e-9)
        assert p["grid_best_lr_wsd"] == 8e-3
        assert p["lr_ratio"] == pytest.approx(0.5)
        # the parabola's minimum is the floor: its gap is exactly WSD's 2% advantage
        assert p["gap_fit"] == pytest.approx(-0.02, abs=1e-12)
        # on the grid each side misses its optimum by 0.3 octaves: the same penalty added to both
        penalty = 0.05 * 0.3**2
        cos_floor = p["fit_loss_cosine"]
        assert p["loss_cosine"] == pytest.approx(cos_floor + penalty)
        assert p["gap"] == pytest.approx(-0.02 * cos_floor / (cos_floor + penalty))
    edge = [p["lr_ratio"] for p in pairs if p["wsd_at_grid_edge"]]
    expected = math.exp(np.mean(np.log([0.5] * 4 + edge)))
    assert fit["lr_ratio_wsd_over_cosine"] == pytest.approx(expected)
    assert fit["any_at_grid_edge"]
    # the old keys pair the grid-best runs
    assert {g["wsd_lr"] for g in fit["gap_per_budget"] if g["C"] < 4e9} == {8e-3}
    assert {g["cosine_lr"] for g in fit["gap_per_budget"]} == {1.6e-2}


def test_tuned_compute_is_the_grid_times_the_untuned_compute():
    tuned = wsd_vs_cosine_tuned.analyse(synthetic(tuned_config()))
    untuned = wsd_vs_cosine_tuned.analyse(synthetic(config(ONE_VARIANT)))
    assert "tuned_per_budget" not in untuned and "compute" not in untuned
    compute = tuned["compute"]
    assert compute["n_lrs"] == 5
    assert compute["cosine"] == pytest.approx(5 * untuned["flops"]["cosine"])
    assert compute["wsd"] == pytest.approx(5 * untuned["flops"]["wsd"])
    assert compute["cosine_over_wsd"] == pytest.approx(untuned["compute_saving_ratio"])
    assert tuned["compute_saving_ratio"] == pytest.approx(untuned["compute_saving_ratio"])
    # independent WSD runs would cost what the cosine side costs: one run per (budget, LR)
    assert compute["wsd_as_independent_runs"] == pytest.approx(compute["cosine"])


def test_grid_best_marks_one_run_per_schedule_and_budget():
    finals = synthetic(tuned_config())
    finals.loc[finals.index[0], "loss"] = float("nan")
    best = finals[wsd_vs_cosine.grid_best(finals)]
    assert len(best) == 2 * 2 * 3
    assert not best["loss"].isna().any()
    untuned = synthetic(config(ONE_VARIANT))
    assert wsd_vs_cosine.grid_best(untuned).all()


@pytest.mark.parametrize(("grid", "words"), [
    ("[1.0e-2, 2.0e-2]", "at least 3"),
    ("[0.0, 1.0e-2, 2.0e-2]", "lr_grid"),
    ("[-1.0e-2, 1.0e-2, 2.0e-2]", "lr_grid"),
    ("[2.0e-2, 1.0e-2, 4.0e-2]", "ascending"),
    ("[1.0e-2, 1.0e-2, 2.0e-2]", "twice"),
])
def test_bad_lr_grid_exits_2_naming_the_key(tmp_path, monkeypatch, capsys, grid, words):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"wsd_vs_cosine:\n  enabled: true\n  lr_grid: {grid}\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["check-config", str(REPO / "config.yaml"), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "wsd_vs_cosine.lr_grid" in err and words in err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]
