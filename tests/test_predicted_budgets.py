"""Budgets that train nothing (`isoflop.predicted_budgets`): the planner's rows, the schedule
law's prediction of each branch, runs.csv's `loss_source`, and the IsoFLOP fit with and without
them, on runs made from a known L(N, D)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from scalinglab.cli.main import main
from scalinglab.config import to_dict
from scalinglab.errors import UserError
from scalinglab.fitting.schedule_law import predict
from scalinglab.phases import isoflop_fit, schedule_law, study
from scalinglab.training.metrics import RUN_COLUMNS, trained_rows, with_predicted
from test_isoflop_laws import config, runs_of, true_loss

TRAINED = list(np.geomspace(1e11, 3.16e12, 10))
# between each pair of trained budgets, half-way in log C
PREDICTED = [float(np.sqrt(a * b)) for a, b in zip(TRAINED, TRAINED[1:], strict=False)]
MPL = {"L0": 3.0, "A": 1.0, "alpha": 0.5, "B": 40.0, "C": 0.6, "beta": 0.3, "gamma": 0.5}


def predicted_config(**isoflop):
    return config(isoflop={"predicted_budgets": PREDICTED, **isoflop})


# -- the planner --------------------------------------------------------------------------------
def test_predicted_rows_decay_only_where_the_stable_run_has_trained():
    cfg = predicted_config()
    trained_plan, predicted = study.plan_isoflop(cfg), study.plan_predicted(cfg)
    assert sorted(predicted["C"].unique()) == pytest.approx(sorted(PREDICTED))
    # the trained plan does not change: nothing of a predicted budget trains
    assert trained_plan.equals(study.plan_isoflop(config()))
    reach = trained_plan.groupby("series_id")["stable_steps"].max()
    kept = study.trained_runs(predicted)
    assert len(kept) > 3 * len(PREDICTED)
    assert (kept["decay_start"] <= kept["series_id"].map(reach)).all()
    beyond = predicted[predicted["reason"].str.contains("would extrapolate")]
    assert len(beyond) and (beyond["decay_start"] > beyond["series_id"].map(reach)).all()
    assert not set(predicted["run_id"]) & set(trained_plan["run_id"])
    assert study.plan_predicted(config()).empty


def test_a_predicted_branch_is_no_shorter_than_its_sizes_shortest_trained_one():
    # min_steps leaves the largest size out of the smallest trained budget but not out of the
    # predicted one just above it, whose branch would then be shorter than any it trained
    plan = study.plan_isoflop(predicted_config())
    largest = plan[plan["N"] == plan["N"].max()].sort_values("C")
    cfg = predicted_config(min_steps=int(largest["steps"].iloc[0]) + 1)
    trained = study.trained_runs(study.plan_isoflop(cfg))
    shortest = trained.groupby("series_id")["steps"].min()
    predicted = study.plan_predicted(cfg)
    kept = study.trained_runs(predicted)
    assert (kept["steps"] >= kept["series_id"].map(shortest)).all()
    # a size that enters the grid above the smallest budget: its predicted budget just below
    # would extrapolate the decay, and is left out with its own reason
    short = predicted[predicted["reason"].str.contains("shorter than the size's shortest")]
    assert len(short) and (short["steps"] < short["series_id"].map(shortest)).all()
    assert set(short["series_id"]) <= set(shortest.index)


@pytest.mark.parametrize("isoflop, schedule, message", [
    ({"predicted_budgets": [TRAINED[3]]}, {}, "is also a trained budget"),
    ({"predicted_budgets": [2.2e11, 2.2e11]}, {}, "listed twice"),
    ({"predicted_budgets": [2.2e11]}, {"kind": "cosine"}, "decay branch of a WSD stable run"),
    ({"predicted_budgets": [-1.0]}, {}, "isoflop.predicted_budgets"),
    ({"predicted_budgets": [5e10]}, {}, "not between the smallest and the largest"),
    ({"predicted_budgets": [4e12]}, {}, "not between the smallest and the largest"),
])
def test_bad_predicted_budgets_name_the_key(isoflop, schedule, message):
    with pytest.raises(UserError, match=message) as err:
        study.check_config(config(isoflop=isoflop, schedule=schedule))
    assert "isoflop.predicted_budgets" in str(err.value)
    if message not in ("listed twice", "isoflop.predicted_budgets"):
        # a config merged over one with predicted budgets is told how to drop them
        assert "set isoflop.predicted_budgets: [] to predict none" in str(err.value)


# -- the law's prediction -----------------------------------------------------------------------
def fitted_specs(cfg):
    """The first grid's specs, and a schedule-law fit with the same known parameters for each
    series, whose leave-one-out errors are 0.2% and 0.4%."""
    plan = study.plan_isoflop(cfg)
    specs = [study.series_spec(cfg, plan, sid).to_dict() for sid in study.trained_series(plan)]
    loo = {f"b{k}": {"leave_one_out": {"final_rel_error": e}} for k, e in enumerate((2e-3, 4e-3))}
    fit = {"form": "mpl", "sizes": [{"series_id": s["series_id"], "N": s["N"], "params": MPL,
                                     "branches": loo} for s in specs]}
    return specs, fit


def test_a_predicted_branch_is_the_law_at_the_end_of_the_schedule_a_trained_one_would_have():
    cfg = predicted_config()
    specs, fit = fitted_specs(cfg)
    predicted = schedule_law.predict_runs(fit, specs, study.plan_predicted(cfg))
    assert list(predicted.columns) == RUN_COLUMNS
    assert (predicted["loss_source"] == "predicted").all()
    assert predicted["predicted_rel_error"].to_numpy() == pytest.approx(np.sqrt((4e-6 + 16e-6) / 2))
    # the same schedule as the spec's own branch of that size and steps: a budget predicted is
    # the budget trained, without the training
    spec = specs[3]
    branch = next(b for b in spec["branches"] if b["trained"])
    same = {"total_steps": branch["total_steps"], "decay_start": branch["decay_start"]}
    np.testing.assert_array_equal(schedule_law.lr_trace(spec, same),
                                  schedule_law.lr_trace(spec, branch))
    plan = study.plan_predicted(cfg).set_index("run_id")
    row = predicted[predicted["series_id"] == spec["series_id"]].iloc[0]
    lr = schedule_law.lr_trace(spec, {"total_steps": int(row.steps),
                                      "decay_start": int(plan.loc[row.run_id, "decay_start"])})
    assert row.loss == pytest.approx(predict("mpl", MPL, lr, [int(row.steps)])[-1], rel=1e-12)
    # a longer decayed run reaches a lower loss
    one = predicted[predicted["series_id"] == spec["series_id"]].sort_values("C")
    assert np.all(np.diff(one["loss"].to_numpy()) < 0)
    # a series the law could not be fitted on predicts nothing
    fit["sizes"][3] = {"series_id": spec["series_id"], "N": spec["N"], "error": "no fit"}
    again = schedule_law.predict_runs(fit, specs, study.plan_predicted(cfg))
    assert spec["series_id"] not in set(again["series_id"])
    assert len(again) == len(predicted) - len(one)
    # nor one without a trained branch to measure the law's error on: its prediction would
    # carry no error, and weigh in the IsoFLOP fit as a trained loss
    other = specs[4]
    fit["sizes"][4] = {**fit["sizes"][4], "branches": {}}
    gaps = schedule_law.unpredictable_series(fit, specs, study.plan_predicted(cfg))
    assert gaps[spec["series_id"]].startswith("the schedule law was not fitted on it (no fit)")
    assert "no trained branch measures the law's error" in gaps[other["series_id"]]
    third = schedule_law.predict_runs(fit, specs, study.plan_predicted(cfg))
    assert not {spec["series_id"], other["series_id"]} & set(third["series_id"])
    assert third["predicted_rel_error"].notna().all() and len(third) < len(again)


def test_runs_csv_keeps_the_trained_rows_first_class():
    cfg = predicted_config()
    trained = runs_of(study.plan_isoflop(cfg), 0.0, np.random.default_rng(0))
    trained = trained.reindex(columns=RUN_COLUMNS).assign(loss_source="trained")
    specs, fit = fitted_specs(cfg)
    predicted = schedule_law.predict_runs(fit, specs, study.plan_predicted(cfg))
    both = with_predicted(trained, predicted)
    assert len(both) == len(trained) + len(predicted)
    assert (np.diff(both["C"].to_numpy()) >= 0).all()
    pd.testing.assert_frame_equal(trained_rows(both).reset_index(drop=True),
                                  trained.sort_values(["C", "N"], kind="stable")
                                  .reset_index(drop=True), check_dtype=False)
    # a table from before loss_source is all trained
    assert len(trained_rows(trained.drop(columns="loss_source"))) == len(trained)
    with pytest.raises(UserError, match="old.csv: no column.s. predicted_rel_error"):
        with_predicted(trained, predicted.drop(columns="predicted_rel_error"), where="old.csv")


# -- the IsoFLOP fit with and without them ----------------------------------------------------
@pytest.fixture(scope="module")
def fitted():
    cfg = predicted_config(noise_seeds=0)
    rng = np.random.default_rng(1)
    plan = study.plan_isoflop(cfg)
    trained = runs_of(plan, 0.002, rng)
    repeat = trained.sample(12, random_state=0).assign(seed=cfg.seed + 1)
    repeat["loss"] = true_loss(repeat["N"], repeat["D"]) * (1 + 0.002 * rng.standard_normal(12))
    trained = pd.concat([trained, repeat], ignore_index=True).assign(loss_source="trained")
    extra = study.trained_runs(study.plan_predicted(cfg)).copy()
    noise = 1 + 0.002 * rng.standard_normal(len(extra))
    extra["loss"] = true_loss(extra["N"], extra["D"]) * noise
    extra = extra.assign(diverged=False, loss_source="predicted", predicted_rel_error=0.003)
    both = pd.concat([trained, extra], ignore_index=True)
    return (cfg, plan, trained, extra, isoflop_fit.analyse(cfg, trained, [plan], n_boot=200),
            isoflop_fit.analyse(cfg, both, [plan], n_boot=200))


def test_the_trained_fit_does_not_see_the_predicted_budgets(fitted):
    _, _, _, _, alone, both = fitted
    assert "with_predicted" not in alone
    assert {k: v for k, v in both.items() if k != "with_predicted"} == alone


def test_with_predicted_fits_every_budget_and_counts_the_compute_saved(fitted):
    cfg, plan, trained, extra, alone, both = fitted
    extended = both["with_predicted"]
    assert extended["predicted_budgets"] == pytest.approx(sorted(PREDICTED))
    assert extended["n_predicted_points"] == len(extra)
    assert extended["n_law_budgets"] > alone["n_law_budgets"]
    assert {b["C"] for b in extended["budgets"]} >= set(extra["C"])
    # the truth: N_opt(C) of the known law along this study's D = C / f(N)
    n_opt = [isoflop_fit.optimum_on_grid({"E": 1.5, "A": 40.0, "B": 88.0, "alpha": 0.34,
                                          "beta": 0.28}, c,
                                         isoflop_fit.FlopsPerToken(cfg, trained))["N_opt"]
             for c in (1e11, 3.16e12)]
    true_a = np.log(n_opt[1] / n_opt[0]) / np.log(31.6)
    low, high = extended["ci"]["a"]
    assert low < true_a < high and abs(extended["a"] - alone["a"]) < 0.05
    compute = extended["compute"]
    assert compute["trained_flops"] == alone["compute"]["trained_flops"]
    assert compute["independent_flops"] == pytest.approx(
        alone["compute"]["independent_flops"] + extra["C_actual"].sum())
    compared = extended["compared"]
    assert compared["compute_saving_ratio"]["trained"] == alone["compute_saving_ratio"]
    assert compared["compute_saving_ratio"]["with_predicted"] == pytest.approx(
        compute["independent_flops"] / compute["trained_flops"])
    assert compared["a_ci_width"]["trained"] == pytest.approx(np.diff(alone["ci"]["a"])[0])


def test_without_a_noise_floor_the_predicted_budgets_are_not_fitted():
    """No repeated run, no noise floor: a prediction cannot be weighed against a trained loss,
    so the fit with them is left out, and says why, rather than counting both alike."""
    cfg = predicted_config(noise_seeds=0)
    plan = study.plan_isoflop(cfg)
    trained = runs_of(plan, 0.002, np.random.default_rng(2)).assign(loss_source="trained")
    extra = study.trained_runs(study.plan_predicted(cfg)).copy()
    extra = extra.assign(loss=true_loss(extra["N"], extra["D"]), diverged=False,
                         loss_source="predicted", predicted_rel_error=0.003)
    fit = isoflop_fit.analyse(cfg, pd.concat([trained, extra], ignore_index=True), [plan],
                              n_boot=50)
    assert fit["noise"]["sigma"] is None
    assert fit["with_predicted"]["skipped"].startswith("no noise floor")
    assert fit["with_predicted"]["n_predicted_points"] == 0
    assert "budgets" not in fit["with_predicted"]


def test_a_predicted_point_weighs_less_than_a_trained_one():
    points = pd.DataFrame({"loss": [4.0, 4.0], "n_seeds": [1, 1],
                           "predicted_rel_error": [np.nan, 0.005]})
    trained = isoflop_fit.point_noise(points, 0.01)
    predicted = isoflop_fit.predicted_noise(points, 0.01)
    assert trained[0] == pytest.approx(0.01)
    assert predicted[1] == pytest.approx(np.hypot(0.01, 0.02))
    assert isoflop_fit.predicted_noise(points, None) is None


# -- the verbs ----------------------------------------------------------------------------------
def test_predict_verb_writes_the_rows_and_collect_appends_them(tmp_path, capsys):
    cfg = predicted_config()
    specs, fit = fitted_specs(cfg)
    paths = []
    for spec in specs:
        paths.append(tmp_path / f"{spec['series_id']}.json")
        paths[-1].write_text(json.dumps(spec))
    (tmp_path / "fit.json").write_text(json.dumps(fit))
    (tmp_path / "study.json").write_text(json.dumps(to_dict(cfg)))
    out = tmp_path / "predicted_runs.csv"
    code = main(["schedule-law", "predict", "--fit", str(tmp_path / "fit.json"), "--specs",
                 *map(str, paths), "--config", str(tmp_path / "study.json"), "--out", str(out)])
    assert code in (0, None)
    table = pd.read_csv(out)
    expected = study.trained_runs(study.plan_predicted(cfg))
    assert sorted(table["run_id"]) == sorted(expected["run_id"])
    assert f"{len(table)} predicted branches on {len(PREDICTED)} budgets" in capsys.readouterr().out
    # a config without predicted budgets predicts nothing, and says so
    (tmp_path / "plain.json").write_text(json.dumps(to_dict(config())))
    main(["schedule-law", "predict", "--fit", str(tmp_path / "fit.json"), "--specs",
          *map(str, paths), "--config", str(tmp_path / "plain.json"), "--out", str(out)])
    assert pd.read_csv(out).empty
