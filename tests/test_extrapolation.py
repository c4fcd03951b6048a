"""The loss law's extrapolation backtest (phases.extrapolation): exact on an exact power law,
an error that grows with the distance on a frontier that bends, the rules that turn it into a
recipe's error, and the range that validation checks."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from scalinglab.config import to_dict
from scalinglab.phases import extrapolation, recipe
from test_recipe import isoflop_runs, study


def bending_runs(budgets, floor: float = 3.0, k: float = 40.0, e: float = -0.1,
                 a: float = 0.5, k_n: float = 0.01) -> pd.DataFrame:
    """Parabolas in log N around optima on L_opt = floor + k C^e: not a power law in C."""
    rows = []
    for c in budgets:
        n_opt, l_opt = k_n * c**a, floor + k * c**e
        for x in np.linspace(-1.2, 1.2, 7):
            n = n_opt * math.exp(x)
            rows.append({"C": c, "N": n, "D": c / (6 * n), "loss": l_opt + 0.05 * x * x})
    return pd.DataFrame(rows)


def test_the_backtest_of_an_exact_power_law_makes_no_error():
    fit = recipe.fit_compute_optimal(isoflop_runs(), to_dict(study()), n_boot=50)
    backtest = fit["extrapolation_backtest"]
    # five budgets 1e12..1e14: cuts at 3.16e13 (4 budgets) and 1e13 (3); two budgets make no law
    assert [r["fitted_budgets"] for r in backtest["rows"]] == [4, 3]
    assert [r["ratio"] for r in backtest["rows"]] == pytest.approx([10**0.5, 10.0])
    for row in backtest["rows"]:
        assert abs(row["loss_error"]) < 1e-6 and abs(row["N_opt_error"]) < 1e-6
    assert backtest["observed"]["loss_opt"] == pytest.approx(40.0 * 1e14**-0.05, rel=1e-6)


def test_on_a_bending_frontier_the_error_grows_with_distance_and_the_range_holds_the_truth():
    budgets = np.geomspace(1e12, 1e14, 9)
    fit = recipe.fit_compute_optimal(bending_runs(budgets), to_dict(study()), n_boot=50)
    rows = fit["extrapolation_backtest"]["rows"]
    errors = [abs(r["loss_error"]) for r in rows]
    assert len(rows) == 6 and errors == sorted(errors) and errors[0] > 1e-4
    # a power law through a frontier that flattens towards its floor predicts too low a loss
    assert all(r["loss_error"] < 0 for r in rows)
    made = recipe.make_recipe(fit, None, 1e15)  # 10x the largest budget
    truth = 3.0 + 40.0 * 1e15**-0.1
    low, high = made["predicted_loss_ci"]
    assert not low <= truth <= high  # noiseless budgets: the bootstrap holds no form error
    low, high = made["predicted_loss_range"]
    assert low <= truth <= high
    # the curvature carried to the recipe's 2-decade fit and 10x reach: the error it made, a
    # little over (this frontier bends less at larger budgets)
    missed = abs(made["predicted_loss"] / truth - 1)
    assert missed > errors[3]  # a wider fit misses by more than the 10x cut's narrower one
    assert missed <= made["extrapolation_error"]["value"] <= 1.3 * missed


def test_the_curvature_is_read_from_cuts_of_any_geometry_and_carried_to_the_recipes():
    kappa, offset = 0.004, -0.002
    rows = []
    for fit_from, cut, top in [(1.0, 10.0, 100.0), (1.0, 30.0, 100.0), (1.0, 3.0, 100.0),
                               (1.0, 50.0, 100.0)]:
        bent = extrapolation.bend(math.log(cut / fit_from), math.log(top / cut))
        rows.append({"fit_from": fit_from, "fit_up_to": cut, "ratio": top / cut,
                     "loss_error": math.expm1(-(offset + kappa * bent))})
    error = extrapolation.systematic_error(rows, 10.0, math.log(100.0))
    assert error["curvature"] == pytest.approx(kappa) and error["offset"] == pytest.approx(offset)
    assert error["value"] == pytest.approx(
        math.expm1(kappa * extrapolation.bend(math.log(100.0), math.log(10.0))), rel=1e-6)
    # a straight line through a parabola's window: flat, missing its end by kappa w^2 / 12
    assert extrapolation.bend(2.0, 0.0) == pytest.approx(2.0**2 / 12)
    assert extrapolation.systematic_error(rows[:2], 10.0, 1.0)["value"] is None


def test_the_range_adds_the_error_in_quadrature_on_each_side():
    assert extrapolation.predicted_range(3.0, [2.9, 3.2], 0.02) == pytest.approx(
        [3.0 - math.hypot(0.1, 0.06), 3.0 + math.hypot(0.2, 0.06)])
    assert extrapolation.predicted_range(3.0, [2.9, 3.2], None) == [2.9, 3.2]
    # one run's seed noise (its 95% spread, 1.96 sigma) on top of the law's errors
    assert extrapolation.predicted_range(3.0, [2.9, 3.2], 0.02, 0.08) == pytest.approx(
        [3.0 - math.hypot(0.1, 0.06, 1.96 * 0.08), 3.0 + math.hypot(0.2, 0.06, 1.96 * 0.08)])
    # no bootstrap: the error and the noise alone
    nan = float("nan")
    assert extrapolation.predicted_range(3.0, [nan, nan], 0.02, 0.08) == pytest.approx(
        [3.0 - math.hypot(0.06, 1.96 * 0.08), 3.0 + math.hypot(0.06, 1.96 * 0.08)])


def test_below_the_largest_budget_the_error_is_the_miss_inside_the_window_and_positive():
    rows = [{"fit_from": 1.0, "fit_up_to": c, "ratio": 100.0 / c, "loss_error": -0.001 * i}
            for i, c in enumerate([50.0, 30.0, 10.0, 3.0])]
    inside = extrapolation.systematic_error(rows, 0.5, math.log(100.0))
    assert inside["value"] >= 0


def test_a_cut_at_a_budget_left_out_of_the_law_is_not_a_cut_and_the_top_is_a_law_budget():
    budgets = list(np.geomspace(1e12, 1e14, 9))
    runs = bending_runs(budgets)
    # the largest budget's minimum at its grid's edge: out of the law, and not the reference
    edge = runs["C"] == budgets[-1]
    runs.loc[edge, "loss"] = runs.loc[edge, "loss"] - 0.2 * np.log(runs.loc[edge, "N"])
    fit = recipe.fit_compute_optimal(runs, to_dict(study()), n_boot=20)
    backtest = fit["extrapolation_backtest"]
    assert backtest["C"] == pytest.approx(budgets[-2]) == pytest.approx(fit["largest_budget"])
    assert len({r["fit_up_to"] for r in backtest["rows"]}) == len(backtest["rows"]) == 5


def test_a_backtest_without_a_bootstrap_has_no_intervals_and_no_coverage():
    fit = recipe.fit_compute_optimal(bending_runs(np.geomspace(1e12, 1e14, 9)),
                                     to_dict(study()), n_boot=0)
    backtest = fit["extrapolation_backtest"]
    assert backtest["bootstrap_coverage"] is None
    assert all("loss_opt_ci" not in r for r in backtest["rows"]) and len(backtest["rows"]) == 6


def test_a_fit_made_before_the_backtest_gives_a_recipe_with_its_interval_alone():
    fit = recipe.fit_compute_optimal(isoflop_runs(noise=0.002), to_dict(study()), n_boot=50)
    del fit["extrapolation_backtest"]
    made = recipe.make_recipe(fit, None, 1e15)
    assert made["extrapolation_error"]["value"] is None
    assert made["predicted_loss_range"] == made["predicted_loss_ci"]
    record = {"final_val_loss": made["predicted_loss"], "run_id": "r", "D": 1.0,
              "spec": {"N": 1.0, "model": {"n_layer": 2, "n_embd": 16, "n_head": 2,
                                           "block_size": 64},
                       "training": {"lr": 1e-2, "batch_size": 16}}}
    check = recipe.validate(made, record)
    assert check["inside_range"] is True and check["inside_interval"] is True
