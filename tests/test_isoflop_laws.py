"""The IsoFLOP laws: Method 2 on a window per budget, Method 3 on every branch, the noise floor,
the compute saved, the leave-largest-out check and the refinement rounds' planner, on runs made
from a known L(N, D); and the bad input that must stop before anything is written."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from helpers import REPO
from scalinglab.config import SizeConfig, StudyConfig, from_dict, to_dict
from scalinglab.errors import UserError
from scalinglab.fitting.inputs import FitError
from scalinglab.fitting.isoflop_window import fit_isoflop_window, window_of
from scalinglab.phases import isoflop_fit, isoflop_rounds, study
from scalinglab.plots.study import interval_words

TRUE = {"E": 1.5, "A": 40.0, "B": 88.0, "alpha": 0.34, "beta": 0.28}
LADDER = [{"n_layer": 2, "n_embd": w, "n_head": 2} for w in (16, 20, 24, 32, 40, 48, 64, 80)]
POOL = [{"n_layer": 1, "n_embd": 16, "n_head": 2}, {"n_layer": 2, "n_embd": 28, "n_head": 2},
        {"n_layer": 2, "n_embd": 96, "n_head": 2}, {"n_layer": 2, "n_embd": 112, "n_head": 2}]


def config(**sections) -> StudyConfig:
    data = {"tokenizer": {"vocab_size": 1024},
            "model": {"block_size": 128, "sizes": LADDER},
            "training": {"batch_size": 16, "warmup_tokens": 40960},
            "schedule": {"decay_fraction": 0.1},
            "isoflop": {"budgets": list(np.geomspace(1e11, 3.16e12, 10)),
                        "max_tokens_per_param": 400},
            "adaptive": {"sizes": POOL}}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return from_dict(StudyConfig, data)


def true_loss(N, D):
    return TRUE["E"] + TRUE["A"] / N ** TRUE["alpha"] + TRUE["B"] / D ** TRUE["beta"]


def runs_of(plan: pd.DataFrame, noise: float, rng) -> pd.DataFrame:
    """runs.csv as `isoflop collect` writes it, the loss drawn around the true L(N, D)."""
    runs = study.trained_runs(plan).copy()
    runs["loss"] = true_loss(runs["N"], runs["D"]) * (1 + noise * rng.standard_normal(len(runs)))
    runs["diverged"] = False
    return runs


def true_optimum(cfg, runs, C):
    return isoflop_fit.optimum_on_grid(TRUE, C, isoflop_fit.FlopsPerToken(cfg, runs))


# -- Method 2 on a window -----------------------------------------------------------------------
def test_window_is_a_width_in_log_n_at_least_the_configured_count():
    log_n = np.log([1, 2, 4, 8, 16, 32, 64.0])
    # a factor 3 around 8 holds 4, 8 and 16; the count widens it to the 5 nearest
    assert window_of(log_n, np.log(8), 3, 3.0).tolist() == [0, 0, 1, 1, 1, 0, 0]
    assert window_of(log_n, np.log(8), 5, 3.0).tolist() == [0, 1, 1, 1, 1, 1, 0]
    assert window_of(log_n, np.log(8), 5, 5.0).tolist() == [0, 1, 1, 1, 1, 1, 0]
    assert window_of(log_n, np.log(8), 3, 9.0).all()  # 1 and 64 lie a factor 8 away
    assert window_of(log_n, np.log(8), 0, 3.0).all()


def parabola_grid(edge_budget: float | None = None):
    """Exact parabolas in log N around N_opt = 0.01 C^0.5, seven sizes each; the budget
    `edge_budget` gets its sizes all above its optimum."""
    rows = []
    for c in np.geomspace(1e12, 1e14, 5):
        n_opt = 0.01 * c ** 0.5
        offsets = np.linspace(0.3, 2.7, 7) if c == edge_budget else np.linspace(-1.2, 1.2, 7)
        for k in offsets:
            n = n_opt * np.exp(k)
            rows.append({"C": c, "N": n, "D": c / (6 * n), "loss": 3.0 + 0.05 * k * k})
    return pd.DataFrame(rows)


def test_window_fit_recovers_exact_optima_and_flags_an_edge():
    grid = parabola_grid(edge_budget=1e14)
    fit = fit_isoflop_window(grid["C"], grid["N"], grid["loss"], grid["D"], n_boot=0)
    top = fit.budgets[-1]
    assert top.edge == "low" and not top.in_law and "smallest size" in top.reason
    assert [b.in_law for b in fit.budgets[:-1]] == [True] * 4
    for b in fit.budgets[:-1]:
        assert b.N_opt == pytest.approx(0.01 * b.C ** 0.5, rel=1e-9)
        assert len(b.window) == 5  # 7 sizes 0.4 apart in ln N: a factor 3 holds 5
    assert fit.a == pytest.approx(0.5, abs=1e-9)
    assert fit.k_n == pytest.approx(0.01, rel=1e-6)


def test_each_budget_interval_holds_the_truth_and_the_law_interval_is_tight():
    rng = np.random.default_rng(3)
    cfg = config()
    runs = runs_of(study.plan_isoflop(cfg), 0.002, rng)
    points = isoflop_fit.fit_points(runs)
    fit = fit_isoflop_window(points["C"], points["N"], points["loss"], points["D"],
                             noise=0.002 * points["loss"], n_boot=400, seed=0)
    truth = [true_optimum(cfg, runs, b.C)["N_opt"] for b in fit.law_budgets]
    inside = [b.N_opt_ci[0] <= n <= b.N_opt_ci[1] for b, n in zip(fit.law_budgets, truth,
                                                                   strict=True)]
    assert np.mean(inside) >= 0.7  # 95% intervals: all but a few of 10
    low, high = fit.boot.interval("a")
    slope = np.polyfit(np.log([b.C for b in fit.law_budgets]), np.log(truth), 1)[0]
    assert low - 0.02 <= slope <= high + 0.02  # the window's bias is small against the noise
    assert high - low < 0.15


def test_window_too_small_and_too_few_interior_budgets_are_fit_errors():
    grid = parabola_grid()
    with pytest.raises(FitError, match="window_sizes=2"):
        fit_isoflop_window(grid["C"], grid["N"], grid["loss"], grid["D"], window_sizes=2)
    two = grid[grid["C"] < 5e12]
    with pytest.raises(FitError, match="2 budget.s. with an interior minimum, a law needs 3"):
        fit_isoflop_window(two["C"], two["N"], two["loss"], two["D"], n_boot=0)


# -- the phase's analysis ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def analysed():
    """A first round, its refinement round planned from the fit, and the fit over both."""
    rng = np.random.default_rng(0)
    cfg = config()
    first = study.plan_isoflop(cfg)
    runs = runs_of(first, 0.003, rng)
    fit0 = isoflop_fit.analyse(cfg, runs, [first], n_boot=200)
    second = isoflop_rounds.plan_round(cfg, fit0, runs, 1, 10**9)
    runs = pd.concat([runs, runs_of(second, 0.003, rng)], ignore_index=True)
    return cfg, first, second, runs, isoflop_fit.analyse(cfg, runs, [first, second],
                                                         n_boot=200)


def test_noise_seed_repeats_train_only_the_nearest_budgets_with_other_seeds(analysed):
    cfg, first, second, runs, fit = analysed
    repeats = second[second["series_id"].str.contains("-s")]
    assert sorted(repeats["seed"].unique()) == [cfg.seed + 1, cfg.seed + 2]
    assert (second["round"] == 1).all()
    trained = repeats[repeats["reason"] == ""]
    excluded = repeats[repeats["reason"] == isoflop_rounds.NOT_NEAREST]
    # the rest were left out of the first grid already (too many tokens per parameter)
    other = repeats[~repeats.index.isin(trained.index.union(excluded.index))]
    assert other["reason"].str.contains("isoflop.max_tokens_per_param").all()
    # every interior budget of the first fit has its nearest size repeated, once per seed
    assert trained.groupby("C").size().eq(cfg.isoflop.noise_seeds).all()
    # a repeat series' stable run stops at its last trained branch
    for _, rows in repeats.groupby("series_id"):
        kept = rows[rows["reason"] == ""]
        assert rows["stable_steps"].iloc[0] == kept["decay_start"].max()


def test_noise_floor_pools_the_seed_spread(analysed):
    cfg, _, _, runs, fit = analysed
    noise = fit["noise"]
    assert noise["relative_sigma"] == pytest.approx(0.003, rel=0.35)
    repeated = runs.groupby(["C", "N"]).size()
    assert len(noise["points"]) == int((repeated >= 3).sum())
    assert {p["n_seeds"] for p in noise["points"]} == {3}


def test_compute_saving_ratio_is_the_independent_grid_over_what_was_trained(analysed):
    cfg, first, second, runs, fit = analysed
    tokens = study.batch_tokens(cfg)
    trained = 0.0
    for plan in (first, second):
        kept = study.trained_runs(plan)
        for _, rows in kept.groupby("series_id"):
            trained += rows["stable_steps"].iloc[0] * tokens * rows["flops_per_token"].iloc[0]
        trained += ((kept["steps"] - kept["decay_start"]) * tokens * kept["flops_per_token"]).sum()
    independent = sum(study.trained_runs(p)["C_actual"].sum() for p in (first, second))
    assert fit["compute"]["trained_flops"] == pytest.approx(trained)
    assert fit["compute"]["independent_flops"] == pytest.approx(independent)
    assert fit["compute_saving_ratio"] == pytest.approx(independent / trained)
    assert fit["compute_saving_ratio"] > 1.5  # 10 budgets; the default study's 16 give more
    assert [r["round"] for r in fit["compute"]["by_round"]] == [0, 1]


def test_method3_recovers_the_law_and_agrees_with_method2(analysed):
    cfg, _, _, runs, fit = analysed
    for name in ("huber", "varpro"):
        m3 = fit["method3"][name]
        assert m3["alpha"] == pytest.approx(TRUE["alpha"], abs=0.05)
        assert m3["beta"] == pytest.approx(TRUE["beta"], abs=0.05)
        low, high = m3["ci"]["a"]
        assert low <= TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"]) <= high
        centre = fit["tokens_per_param_at_C"]
        assert m3["tokens_per_param"] == pytest.approx(
            true_optimum(cfg, runs, centre)["tokens_per_param"], rel=0.1)
        assert fit["agreement"][name]["a"]["agree"] is True
    band = fit["method3"]["huber"]["band"]
    assert len(band["C"]) == len(band["N_opt"]) and all(lo < hi for lo, hi in band["N_opt"])


def test_leave_largest_out_predicts_the_largest_budget(analysed):
    cfg, _, _, runs, fit = analysed
    check = fit["leave_largest_out"]
    assert check["C"] == pytest.approx(max(cfg.isoflop.budgets))
    for method in ("method2", "method3"):
        assert abs(check[method]["loss_error"]) < 0.02, method
        assert abs(check[method]["N_opt_error"]) < 0.3, method
    assert check["method2"]["fitted_budgets"] < len(fit["budgets"])


def test_runs_record_their_round_and_the_fit_lists_them(analysed):
    _, _, second, runs, fit = analysed
    assert {r["round"] for r in fit["rounds"]} == {0, 1}
    added = {study.size_label(SizeConfig(r.n_layer, r.n_embd, r.n_head))
             for r in study.trained_runs(second).itertuples()}
    assert set(fit["rounds"][1]["sizes"]) == added
    words = interval_words(fit)
    assert words.count("- At C = ") == len(fit["budgets"])
    assert "95% interval" in words


def test_the_round_checkpoint_writes_a_spec_for_each_series_it_trains(analysed, tmp_path):
    from scalinglab.phases import isoflop

    cfg, _, second, _, _ = analysed
    paths = isoflop.write_round_specs(cfg, second, tmp_path / "specs")
    trained = study.trained_runs(second)
    assert sorted(p.name for p in (tmp_path / "specs").iterdir()) == sorted(
        f"{sid}.json" for sid in trained["series_id"].unique())
    assert len(paths) == trained["series_id"].nunique()
    for sid, rows in trained.groupby("series_id"):
        spec = json.loads((tmp_path / "specs" / f"{sid}.json").read_text())
        assert spec == study.series_spec(cfg, second, sid).to_dict()
        # the spec trains the plan's branches and only those
        branches = {b["label"] for b in spec["branches"] if b.get("trained", True)}
        assert branches == set(rows["label"])


def test_an_edge_asks_the_pool_for_a_size_beyond_it():
    cfg = config()
    fit = {"budgets": [
        {"C": 1e11, "edge": "low", "sizes": [6000.0, 9000.0], "N_opt": 5000.0},
        {"C": 3e12, "edge": "high", "sizes": [60000.0, 154000.0], "N_opt": 2e5},
        {"C": 5e11, "edge": None, "sizes": [6000.0, 154000.0], "N_opt": 30000.0,
         "N_opt_ci": [20000.0, 40000.0]},
        # a parabola without curvature has no vertex (null in the JSON): nothing to aim at
        {"C": 8e11, "edge": None, "sizes": [6000.0, 154000.0], "N_opt": None,
         "N_opt_ci": [1e-30, 3000.0]},
    ]}
    needs = isoflop_rounds.budget_needs(fit, cfg.adaptive.max_interval_ratio)
    assert [n["side"] for n in needs] == ["below", "above", "near"]
    chosen = isoflop_rounds.choose_sizes(cfg, needs, used=set())
    labels = [study.size_label(s) for s in chosen]
    assert len(labels) == cfg.adaptive.max_new_sizes
    assert "l1-d16-h2" in labels and "l2-d96-h2" in labels
    assert isoflop_rounds.choose_sizes(cfg, needs, used=set(labels)) != chosen



def test_a_refinement_size_trains_only_up_to_the_largest_budget_that_asked_for_it():
    cfg = config(adaptive={"rounds": 2, "max_new_sizes": 1})
    budgets = cfg.isoflop.budgets
    # two budgets low in the grid are unsure of N_opt near 20k (d28 answers); the others are sure
    fit = {"budgets": [{"C": C, "edge": None, "sizes": [6000.0, 154000.0], "N_opt": 20000.0,
                        "N_opt_ci": [10000.0, 40000.0] if i in (1, 3) else [19000.0, 21000.0]}
                       for i, C in enumerate(budgets)]}
    table = isoflop_rounds.plan_round(cfg, fit, pd.DataFrame(columns=["n_layer", "n_embd",
                                                                      "n_head"]), 2, 10**9)
    assert set(table["n_embd"]) == {28}
    trained = study.trained_runs(table)
    assert trained["C"].max() == pytest.approx(budgets[3])
    # every budget below the last asker still branches (a branch costs a tenth of its run)
    assert len(trained) == 4
    above = table[table["C"] > budgets[3] * 1.001]
    # (the largest budget is left out already, for tokens per parameter)
    assert len(above) == 6 and (above["reason"] != "").all()
    assert (above["reason"] == isoflop_rounds.ABOVE_ASKERS).sum() == 5
    assert (table["stable_steps"] == trained["decay_start"].max()).all()

# -- bad input: exit 2 naming the key, nothing written -----------------------------------------
@pytest.mark.parametrize(("yaml", "key"), [
    ("adaptive:\n  rounds: -1\n", "adaptive.rounds"),
    ("isoflop:\n  window_sizes: 2\n", "isoflop.window_sizes"),
    ("isoflop:\n  noise_seeds: -1\n", "isoflop.noise_seeds"),
    ("isoflop:\n  window_ratio: 0.5\n", "isoflop.window_ratio"),
])
def test_bad_isoflop_and_adaptive_keys_exit_2(tmp_path, yaml, key):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml)
    proc = subprocess.run([sys.executable, "-m", "scalinglab", "check-config",
                           str(REPO / "config.yaml"), str(bad)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert key in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()


def test_too_few_interior_budgets_is_exit_2_and_writes_no_fit(tmp_path):
    cfg = config(isoflop={"budgets": [1e11, 3e11]})
    runs = runs_of(study.plan_isoflop(cfg), 0.0, np.random.default_rng(0))
    runs.to_csv(tmp_path / "runs.csv", index=False)
    plan = tmp_path / "plan.csv"
    study.plan_isoflop(cfg).to_csv(plan, index=False)
    spec = tmp_path / "study.json"
    spec.write_text(json.dumps(to_dict(cfg)))
    out = tmp_path / "fits" / "isoflop.json"
    proc = subprocess.run([sys.executable, "-m", "scalinglab", "isoflop", "fit", "--runs",
                           str(tmp_path / "runs.csv"), "--plans", str(plan), "--config",
                           str(spec), "--out", str(out), "--bootstrap", "0"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "interior minimum" in proc.stderr and "window_sizes" in proc.stderr
    assert not out.exists()


def test_refinement_round_numbers_start_at_one():
    cfg = config()
    with pytest.raises(UserError, match="count from 1"):
        isoflop_rounds.plan_round(cfg, {"budgets": []}, pd.DataFrame(), 0, 10**9)


def test_the_full_study_validates_at_ten_times_the_largest_fitted_budget():
    from scalinglab.cli.main import merged_config
    from scalinglab.phases import recipe

    cfg = from_dict(StudyConfig, merged_config([str(REPO / "config.yaml"),
                                                str(REPO / "workflow/configs/full.yaml")]))
    assert cfg.validation.enabled and cfg.validation.compute_factor >= 10
    assert max(recipe.fitted_budgets(cfg)) == max(cfg.isoflop.budgets)
