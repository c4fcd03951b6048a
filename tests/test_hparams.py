"""The LR x batch sweep and the critical batch: run tables, near-optimal selection, and fits that
recover known exponents from synthetic numbers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from helpers import REPO
from scalinglab.cli import main as cli
from scalinglab.config import StudyConfig, from_dict
from scalinglab.errors import UserError
from scalinglab.phases import critical_batch, hparams

LADDER = [{"n_layer": 1, "n_embd": 8, "n_head": 1}, {"n_layer": 1, "n_embd": 16, "n_head": 2},
          {"n_layer": 2, "n_embd": 24, "n_head": 2}]
SWEEP = {"enabled": True, "budgets": [1.0e9, 4.0e9], "lrs": [3e-3, 1e-2, 3e-2],
         "batch_tokens": [128, 256], "tokens_per_param": 50}


def config(hp=None, cb=None, **top) -> StudyConfig:
    data = {"tokenizer": {"vocab_size": 300},
            "model": {"block_size": 32, "sizes": LADDER},
            "training": {"batch_size": 8, "warmup_tokens": 1024},
            "isoflop": {"budgets": [4e9, 1e10], "min_steps": 5},
            "hparams": dict(SWEEP, **(hp or {})), **top}
    if cb is not None:
        data["critical_batch"] = cb
    return from_dict(StudyConfig, data)


# -- the sweep's run table ------------------------------------------------------------------------
def test_plan_trains_one_size_per_budget_on_every_lr_and_batch():
    cfg = config()
    table = hparams.plan(cfg)
    trained = table[table["reason"] == ""]
    assert len(trained) == 2 * 3 * 2  # budgets x lrs x batches
    assert trained["run_id"].is_unique
    per_budget = trained.groupby("C")["N"].nunique()
    assert (per_budget == 1).all()
    # every series carries every budget label, so the stable job's outputs are fixed names
    assert (table.groupby("series_id")["label"].nunique() == 2).all()
    row = trained[(trained["lr"] == 1e-2) & (trained["batch_tokens"] == 256)
                  & (trained["C"] == 4e9)].iloc[0]
    assert row["run_id"] == f"{row['series_id']}_C4e9"
    assert row["series_id"].startswith("hp-sp-l") and row["series_id"].endswith("-lr1e-02-b8-s0")
    # steps = C / (FLOPs per token x tokens per step); the WSD decay is the last 20%
    assert row["steps"] == round(4e9 / (row["flops_per_token"] * 256))
    assert row["decay_start"] == row["steps"] - round(0.2 * row["steps"])
    assert row["stable_steps"] == row["decay_start"]


def test_size_per_budget_is_closest_to_the_target_tokens_per_param():
    cfg = config()
    table = hparams.plan(cfg)
    trained = table[table["reason"] == ""].drop_duplicates("C")
    for row in trained.itertuples():
        ratios = {}
        for other in table[table["C"] == row.C].drop_duplicates("N").itertuples():
            ratios[other.N] = abs(math.log(row.C / other.flops_per_token / other.N / 50))
        assert min(ratios, key=ratios.get) == row.N


def test_spec_has_the_run_lr_batch_and_branches():
    cfg = config()
    table = hparams.plan(cfg)
    sid = table[table["reason"] == ""]["series_id"].iloc[0]
    spec = hparams.series_spec(cfg, table, sid).to_dict()
    rows = table[table["series_id"] == sid]
    assert spec["training"]["lr"] == rows["lr"].iloc[0]
    assert spec["training"]["batch_size"] * 32 == rows["batch_tokens"].iloc[0]
    assert [b["label"] for b in spec["branches"]] == ["C1e9", "C4e9"]
    assert sum(b["trained"] for b in spec["branches"]) == 1
    assert spec["training"]["eval_every"] == rows[rows["reason"] == ""]["steps"].max()


def test_disabled_sweep_plans_nothing():
    assert hparams.plan(config({"enabled": False})).empty


@pytest.mark.parametrize(("section", "key"), [
    ({"lrs": [1e-3, 3e-3]}, "hparams.lrs"),
    ({"budgets": [1e9]}, "hparams.budgets"),
    ({"batch_tokens": [128]}, "hparams.batch_tokens"),
    ({"lrs": [3e-3, 1e-3, 1e-2]}, "hparams.lrs"),
])
def test_bad_sweep_names_its_key(section, key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        config(section)


@pytest.mark.parametrize(("section", "key"), [
    ({"batch_tokens": [100, 256]}, "hparams.batch_tokens[0]"),
    ({"budgets": [1e6, 4e9]}, "hparams.budgets[0]"),
])
def test_grid_the_study_cannot_run_names_its_key(section, key):
    with pytest.raises(UserError) as err:
        hparams.plan(config(section))
    assert key in str(err.value)


def test_check_config_exits_2_on_two_lrs(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("hparams:\n  enabled: true\n  budgets: [1.0e+9, 4.0e+9]\n"
                   "  lrs: [1.0e-3, 3.0e-3]\n  batch_tokens: [128, 256]\n")
    assert cli.main(["check-config", str(REPO / "config.yaml"), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "hparams.lrs" in err and "at least 3" in err
    assert len(err.strip().splitlines()) == 1


# -- near-optimal selection and the laws ----------------------------------------------------------
ETA = (0.3118, -0.125)     # DeepSeek's eta_opt(C), arXiv:2401.02954 eq. (1)
BATCH = (0.2920, 0.3271)   # and B_opt(C)


def synthetic_sweep(noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Losses on a grid centred (in log) on known optima: L = L0 + a (ln lr/eta*)^2 + b (ln B/B*)^2
    at budgets 1e17..1e19, with the model size N = 0.05 C^0.5 per budget."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in np.geomspace(1e17, 1e19, 5):
        eta, b_opt = ETA[0] * c ** ETA[1], BATCH[0] * c ** BATCH[1]
        for i in range(-2, 3):
            for j in range(-2, 3):
                lr, batch = eta * 2.0**i, b_opt * 2.0**j
                loss = 3.0 * (1 + 0.01 * (math.log(lr / eta) ** 2 + math.log(batch / b_opt) ** 2))
                loss *= 1 + noise * rng.standard_normal()
                rows.append({"run_id": f"{c:g}-{i}-{j}", "C": c, "N": int(0.05 * c ** 0.5),
                             "lr": lr, "batch_tokens": batch, "seed": 0, "D": 1, "loss": loss,
                             "diverged": False})
    return pd.DataFrame(rows)


def test_near_optimal_keeps_runs_within_the_tolerance_of_their_budget():
    points = pd.DataFrame({"C": [1, 1, 1, 2, 2], "loss": [3.00, 3.02, 3.04, 2.50, 2.52],
                           "diverged": [False, False, False, False, True]})
    mask = hparams.near_optimal(points, 0.01)
    assert mask.tolist() == [True, True, False, True, False]
    assert hparams.near_optimal(points, 0.0).tolist() == [True, False, False, True, False]


def test_laws_recover_known_exponents_noise_free():
    fit = hparams.analyse(synthetic_sweep(), 0.01, n_boot=50)
    laws = fit["laws"]
    assert laws["lr_vs_C"]["exponent"] == pytest.approx(ETA[1], abs=1e-2)
    assert laws["lr_vs_C"]["coef"] == pytest.approx(ETA[0], rel=0.05)
    assert laws["batch_vs_C"]["exponent"] == pytest.approx(BATCH[1], abs=1e-2)
    # against N = 0.05 C^0.5: eta* ~ N^(-0.125 / 0.5), B* ~ N^(0.3271 / 0.5)
    assert laws["lr_vs_N"]["exponent"] == pytest.approx(ETA[1] / 0.5, abs=1e-2)
    assert laws["batch_vs_N"]["exponent"] == pytest.approx(BATCH[1] / 0.5, abs=1e-2)
    # within 1%: 0.01 (i^2 + j^2) ln(2)^2 <= 0.01 keeps i^2 + j^2 <= 2, 9 runs per budget
    assert all(b["n_near_optimal"] == 9 for b in fit["budgets"])
    assert not any(b["lr_at_grid_edge"] for b in fit["budgets"])


def test_noisy_sweep_puts_the_true_exponent_inside_the_interval():
    fit = hparams.analyse(synthetic_sweep(noise=0.002, seed=3), 0.01, n_boot=400)
    low, high = fit["laws"]["lr_vs_C"]["ci"]["exponent"]
    assert low <= ETA[1] <= high
    low, high = fit["laws"]["batch_vs_C"]["ci"]["exponent"]
    assert low <= BATCH[1] <= high


def test_law_at_evaluates_the_law_and_its_replicates():
    law = {"coef": 2.0, "exponent": -0.5, "samples": [[2.0, -0.5], [4.0, -0.5], [1.0, -0.5]]}
    at = hparams.law_at(law, 100.0)
    assert at["value"] == pytest.approx(0.2)
    assert at["ci"][0] == pytest.approx(0.1 + 0.05 * 0.1 * 0.5, rel=0.2)
    assert at["ci"][0] < 0.2 < at["ci"][1] <= 0.4


def test_seeds_are_averaged_and_diverged_runs_left_out():
    runs = pd.DataFrame({"C": [1.0] * 4, "N": [10] * 4, "batch_tokens": [64] * 4,
                         "lr": [1e-3, 1e-3, 2e-3, 2e-3], "seed": [0, 1, 0, 1],
                         "loss": [3.0, 3.2, float("nan"), 9.0],
                         "diverged": [False, False, True, True]})
    points = hparams.mean_over_seeds(runs)
    assert points["loss"].iloc[0] == pytest.approx(3.1)
    assert points["diverged"].tolist() == [False, True]


# -- critical batch -------------------------------------------------------------------------------
GAMMA, K = 3.0, 2.0e4


def synthetic_curves(batches=(64, 128, 256, 512, 1024, 2048)) -> pd.DataFrame:
    """Curves with T_B(L) = (L - 1)^-8 exp((ln B - ln B*(L))^2 / 2), B*(L) = K / L^GAMMA: the
    token-optimal batch at loss L is exactly B*(L), and ln T is a parabola in ln B."""
    rows = []
    levels = np.linspace(2.2, 4.0, 3000)
    for b in batches:
        b_star = K / levels**GAMMA
        tokens = (levels - 1) ** -8 * np.exp((np.log(b) - np.log(b_star)) ** 2 / 2) * 1e6
        order = np.argsort(tokens)
        for t, loss in zip(tokens[order], levels[order], strict=True):
            rows.append({"run_id": f"b{b}", "batch_tokens": b, "step": t / b, "tokens": t,
                         "loss": loss, "N": 1000, "lr": 1e-2})
    return pd.DataFrame(rows)


def test_critical_batch_law_recovers_gamma():
    curves = synthetic_curves()
    losses = [2.4, 2.6, 2.8, 3.0, 3.2]  # B* = 1447 ... 610 tokens: inside the grid
    fit = critical_batch.analyse(curves, losses, steps_budget=10**12, n_boot=0)
    for level in fit["levels"]:
        assert level["limited_by"] is None
        assert level["B_opt"] == pytest.approx(K / level["loss"] ** GAMMA, rel=1e-2)
    assert fit["law"]["gamma"] == pytest.approx(GAMMA, abs=1e-2)
    assert fit["law"]["k"] == pytest.approx(K, rel=0.05)
    assert fit["law_fitted_on"] == "optima not at an end of the grid"


def mccandlish_curves(steps_budget: int, batches=(64, 128, 256, 512, 1024, 2048, 4096)):
    """Curves obeying McCandlish et al. exactly: batch B reaches loss L after
    S_B = S_min(L) (1 + B_noise(L) / B) steps, S_min = 1000 / (L - 1)^2, B_noise = 2e4 / L^3;
    each run stops at the steps budget."""
    rows = []
    levels = np.linspace(2.0, 4.0, 4000)
    s_min, b_noise = 1000 / (levels - 1) ** 2, 2e4 / levels**3
    for b in batches:
        steps = s_min * (1 + b_noise / b)
        keep = steps <= steps_budget
        order = np.argsort(steps[keep])
        for s, loss in zip(steps[keep][order], levels[keep][order], strict=True):
            rows.append({"run_id": f"b{b}", "batch_tokens": b, "step": s, "tokens": s * b,
                         "loss": loss, "N": 1000, "lr": 1e-2})
    return pd.DataFrame(rows)


def test_optimum_within_a_steps_budget_follows_mccandlish():
    """Fewest tokens within S_budget steps: the batch with S_B = S_budget exactly,
    B* = B_noise / (S_budget / S_min - 1), found between grid points."""
    budget = 2000
    fit = critical_batch.analyse(mccandlish_curves(budget), [2.2, 2.5, 2.8], steps_budget=budget,
                                 n_boot=0)
    for level in fit["levels"]:
        loss = level["loss"]
        s_min, b_noise = 1000 / (loss - 1) ** 2, 2e4 / loss**3
        assert level["limited_by"] == "steps_budget"
        assert level["B_opt"] == pytest.approx(b_noise / (budget / s_min - 1), rel=0.02)
        assert level["B_crit"] == pytest.approx(b_noise, rel=0.02)


def test_steps_budget_leaves_out_batches_that_do_not_reach_the_loss():
    curves = pd.DataFrame({"run_id": ["a"] * 3 + ["b"] * 3, "batch_tokens": [64] * 3 + [256] * 3,
                           "step": [10, 20, 30] * 2, "tokens": [640, 1280, 1920, 2560, 5120, 7680],
                           "loss": [5.0, 4.0, 3.5, 4.5, 3.6, 3.0], "N": 1, "lr": 1.0})
    # within 30 steps, 3.2 is reached by batch 256 only
    assert math.isnan(critical_batch.tokens_to_reach([640, 1280, 1920], [5.0, 4.0, 3.5], 3.2))
    fit = critical_batch.analyse(curves, [4.0, 3.2], steps_budget=30, n_boot=0)
    first, second = fit["levels"]
    assert first["tokens"][64] == 1280 and first["B_opt"] == 64
    assert first["limited_by"] == "grid"
    assert second["n_reached"] == 1 and "B_opt" not in second


def test_optimum_bounded_by_the_steps_budget_is_the_smallest_batch_that_reaches_the_loss():
    out = critical_batch.optimum([64, 128, 256, 512], [np.nan, 3000.0, 5000.0, 9000.0])
    assert out == {"B_opt": 128.0, "limited_by": "steps_budget", "grid_B": 128.0}
    # an interior minimum is refined by the parabola through log T of its neighbours
    out = critical_batch.optimum([64, 128, 256], [4000.0, 3000.0, 4000.0])
    assert out["limited_by"] is None and out["B_opt"] == pytest.approx(128.0)


def test_tokens_to_reach_interpolates_in_log_tokens_on_the_running_minimum():
    # the running minimum ignores the bump back up to 4.5
    assert critical_batch.tokens_to_reach([100, 400, 800], [4.0, 4.5, 3.0], 3.5) == \
        pytest.approx(math.exp((math.log(400) + math.log(800)) / 2))
    assert critical_batch.tokens_to_reach([100, 200], [3.0, 2.0], 3.5) == 100


def test_mccandlish_fit_recovers_s_min_and_e_min():
    batches = np.array([64.0, 128, 256, 512])
    s_min, e_min = 1000.0, 3.0e5
    tokens = batches * (s_min + e_min / batches)
    out = critical_batch.mccandlish(batches, tokens)
    assert out["S_min"] == pytest.approx(s_min)
    assert out["E_min"] == pytest.approx(e_min)
    assert out["B_crit"] == pytest.approx(300.0)


def test_critical_batch_plan_and_spec_are_stable_runs_of_the_steps_budget():
    cb = {"enabled": True, "n_layer": 1, "n_embd": 16, "n_head": 2,
          "batch_tokens": [64, 128, 256], "steps": 120, "eval_every": 10, "eval_tokens": 2048}
    cfg = config(cb=cb)
    table = critical_batch.plan(cfg)
    assert len(table) == 3 and (table["stable_steps"] == 120).all()
    assert table["D"].tolist() == [120 * 64, 120 * 128, 120 * 256]
    spec = critical_batch.series_spec(cfg, table, table["series_id"].iloc[0]).to_dict()
    assert spec["branches"] == [] and spec["stable_steps"] == 120
    assert spec["training"]["eval_tokens"] == 2048 and spec["training"]["batch_size"] == 2
    with pytest.raises(UserError, match=r"critical_batch\.batch_tokens"):
        config(cb=dict(cb, batch_tokens=[64, 128]))
