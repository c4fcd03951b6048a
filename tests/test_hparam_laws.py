"""`scalinglab fit hparams` and `fitting.hparam_laws`: near-optimal runs per (N, D) group, the
Step Law and DeepSeek laws through them, bootstrap intervals, and bad input (exit 2, no file).
The check on Step Law's released sweep is in test_reference_data.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from scalinglab.cli.main import main
from scalinglab.fitting import hparam_laws
from scalinglab.fitting.powerlaw import bootstrap_power_law, fit_power_law
from scalinglab.phases import hparams

LR = (50.0, -0.7, 0.3)   # lr* = 50 N^-0.7 D^0.3
BATCH = (0.5, 0.6)       # B* = 0.5 D^0.6 (tokens)
SIZES = np.geomspace(1e7, 1e9, 5)
TOKENS = np.geomspace(1e9, 1e11, 5)


def sweep(noise: float = 0.0, seed: int = 0, lr_star=None, batch_star=None) -> pd.DataFrame:
    """An LR x batch grid around known optima in every (N, D) group: the loss is
    L0(N, D) (1 + 0.002 ((ln lr/lr*)^2 + (ln B/B*)^2)) times (1 + noise * a normal draw), on
    factors 2^(k/2), k = -4..4, of the optimum. At the default 0.25% tolerance the runs with
    k_lr^2 + k_B^2 <= 10 are near-optimal: a set symmetric about the optimum."""
    lr_star = lr_star or (lambda n, d: LR[0] * n ** LR[1] * d ** LR[2])
    batch_star = batch_star or (lambda n, d: BATCH[0] * d ** BATCH[1])
    rng = np.random.default_rng(seed)
    rows = []
    for n in SIZES:
        for d in TOKENS:
            base = 1.7 + 400 / n**0.34 + 400 / d**0.28
            for i in range(-4, 5):
                for j in range(-4, 5):
                    lr, batch = lr_star(n, d) * 2 ** (i / 2), batch_star(n, d) * 2 ** (j / 2)
                    loss = base * (1 + 0.002 * (math.log(2) / 2) ** 2 * (i * i + j * j))
                    rows.append({"N": n, "D": d, "lr": lr, "batch": batch,
                                 "loss": loss * (1 + noise * rng.standard_normal())})
    return pd.DataFrame(rows)


def fit_cli(tmp_path, df: pd.DataFrame, *extra) -> dict:
    src, out = tmp_path / "sweep.csv", tmp_path / "fit.json"
    df.to_csv(src, index=False)
    assert main(["fit", "hparams", "--input", str(src), "--out", str(out), *map(str, extra)]) == 0
    return json.loads(out.read_text())


# ---------------------------------------------------------------- the pure functions


def test_near_optimal_is_relative_to_each_groups_best():
    loss = [3.0, 3.006, 3.009, 2.0, 2.004, np.nan, np.nan]
    n = [1, 1, 1, 2, 2, 2, 3]
    d = [5, 5, 5, 5, 5, 5, 5]
    # |3.006/3 - 1| = 0.002 < 0.0025; 0.003 is not; 2.004/2 - 1 = 0.002; NaN never; a group
    # with no finite loss has no best
    assert hparam_laws.near_optimal(loss, [n, d], 0.0025).tolist() == [
        True, True, False, True, True, False, False]
    # the best run counts at tolerance 0; ties with it too
    assert hparam_laws.near_optimal([1.0, 1.0, 1.1], [[0, 0, 0]], 0.0).tolist() == [
        True, True, False]
    # groups are (N, D) pairs, not N alone
    assert hparam_laws.near_optimal([1.0, 2.0], [[1, 1], [5, 6]], 0.0).tolist() == [True, True]


def test_loglinear_fit_is_exact_on_exact_data():
    rng = np.random.default_rng(0)
    x1, x2 = rng.uniform(1, 100, 20), rng.uniform(1, 100, 20)
    fit = hparam_laws.fit_loglinear(3.0 * x1**-0.5 * x2**0.25, {"N": x1, "D": x2})
    assert fit.coef == pytest.approx(3.0, rel=1e-12)
    assert fit.exponents == pytest.approx({"N": -0.5, "D": 0.25}, abs=1e-12)
    assert fit.n_points == 20 and fit.rss < 1e-25


@pytest.mark.parametrize(("y", "xs", "message"), [
    ([1.0, 2.0, 3.0], {"x": [2.0, 2.0, 2.0]}, "fewer than 2 distinct x values"),
    ([1.0, 2.0], {"x": [1.0, 2.0]}, "2 points are too few for a law with 2 parameters"),
    ([1.0, 2.0, 3.0, 4.0], {"N": [1.0, 2.0, 1.0, 2.0], "D": [10.0, 20.0, 10.0, 20.0]},
     "N, D do not vary independently"),
    ([1.0, -2.0, 3.0], {"x": [1.0, 2.0, 3.0]}, "y: every value must be positive"),
])
def test_loglinear_fit_refuses_what_it_cannot_fit(y, xs, message):
    with pytest.raises(hparam_laws.HparamFitError, match=message):
        hparam_laws.fit_loglinear(y, xs)


def test_phase_power_law_is_the_old_one():
    """The hparams phase's fit_law now runs on hparam_laws: its fit and bootstrap replicates are
    those of powerlaw.fit_power_law / powerlaw.bootstrap_power_law (which it used before), up to
    rounding (np.polyfit there, np.linalg.lstsq here)."""
    rng = np.random.default_rng(1)
    x = np.repeat(np.geomspace(1e17, 1e19, 5), 4)
    y = 0.3 * x**-0.125 * np.exp(0.1 * rng.standard_normal(len(x)))
    new = hparams.fit_law(x, y, n_boot=300, seed=4)
    old, boot = fit_power_law(x, y), bootstrap_power_law(x, y, n_boot=300, seed=4)
    assert new["coef"] == pytest.approx(old.coef, rel=1e-10)
    assert new["exponent"] == pytest.approx(old.exponent, rel=1e-10)
    assert new["rss_log"] == pytest.approx(old.rss, rel=1e-8)
    for name in ("coef", "exponent"):
        np.testing.assert_allclose(new["ci"][name], boot.interval(name), rtol=1e-10)
    assert new["bootstrap"]["n_failed"] == boot.n_failed
    np.testing.assert_allclose(new["samples"], boot.samples, rtol=1e-5)


# ---------------------------------------------------------------- the CLI on synthetic sweeps


def test_known_exponents_recovered_noise_free(tmp_path):
    fit = fit_cli(tmp_path, sweep(), "--bootstrap", 50)
    assert fit["n_groups"] == 25
    # k_lr^2 + k_B^2 <= 10 on the 9 x 9 grid: 37 runs per group
    assert all(g["n_near_optimal"] == 37 for g in fit["groups"])
    assert fit["n_near_optimal"] == 25 * 37
    assert fit["lr_law"]["exp_N"] == pytest.approx(LR[1], abs=1e-2)
    assert fit["lr_law"]["exp_D"] == pytest.approx(LR[2], abs=1e-2)
    assert fit["lr_law"]["coef"] == pytest.approx(LR[0], rel=1e-2)
    assert fit["batch_law"]["exp_D"] == pytest.approx(BATCH[1], abs=1e-2)
    assert fit["batch_law"]["coef"] == pytest.approx(BATCH[0], rel=1e-2)
    assert set(fit["ci"]) == {"lr_law", "batch_law", "lr_vs_C", "batch_vs_C"}
    assert set(fit["ci"]["lr_law"]) == {"coef", "exp_N", "exp_D"}
    assert fit["C_source"] == "C = 6ND"
    assert fit["columns"] == {"N": "N", "D": "D", "lr": "lr", "batch": "batch", "loss": "loss"}


def test_deepseek_forms_in_compute(tmp_path):
    """With optima that depend on C = 6ND alone, the C laws recover their exponents, and the
    (N, D) law splits the same exponent between N and D."""
    df = sweep(lr_star=lambda n, d: 0.3118 * (6 * n * d) ** -0.125,
               batch_star=lambda n, d: 0.292 * (6 * n * d) ** 0.3271)
    fit = fit_cli(tmp_path, df, "--bootstrap", 0)
    assert fit["lr_vs_C"]["exponent"] == pytest.approx(-0.125, abs=1e-2)
    assert fit["lr_vs_C"]["coef"] == pytest.approx(0.3118, rel=1e-2)
    assert fit["batch_vs_C"]["exponent"] == pytest.approx(0.3271, abs=1e-2)
    assert fit["lr_law"]["exp_N"] == pytest.approx(-0.125, abs=1e-2)
    assert fit["lr_law"]["exp_D"] == pytest.approx(-0.125, abs=1e-2)
    assert fit["ci"] is None and "bootstrap" not in fit
    # a C column is used as given: twice 6ND moves the coefficient by 2^0.125, not the exponent
    fit = fit_cli(tmp_path, df.assign(flops=12 * df["N"] * df["D"]), "--c-col", "flops",
                  "--bootstrap", 0)
    assert fit["C_source"] == "C column"
    assert fit["lr_vs_C"]["exponent"] == pytest.approx(-0.125, abs=1e-2)
    assert fit["lr_vs_C"]["coef"] == pytest.approx(0.3118 * 2**0.125, rel=1e-2)


def test_noisy_sweep_puts_the_true_exponents_inside_the_intervals(tmp_path):
    fit = fit_cli(tmp_path, sweep(noise=5e-4, seed=2), "--bootstrap", 400, "--seed", 1)
    ci = fit["ci"]
    for law, key, true in (("lr_law", "exp_N", LR[1]), ("lr_law", "exp_D", LR[2]),
                           ("batch_law", "exp_D", BATCH[1])):
        low, high = ci[law][key]
        assert low <= true <= high, (law, key, low, high)
        assert high - low < 0.1, (law, key)  # and the interval says something
        assert low < fit[law][key] < high
    assert fit["bootstrap"] == {"n": 400, "seed": 1, "level": 0.95, "over": "near-optimal runs",
                                "n_failed": {"lr_law": 0, "batch_law": 0, "lr_vs_C": 0,
                                             "batch_vs_C": 0}}


def test_renamed_columns_batch_scale_and_dropped_rows(tmp_path):
    df = sweep().rename(columns={"N": "params", "D": "tokens", "lr": "peak_lr",
                                 "batch": "bs", "loss": "smooth loss"})
    df["bs"] = df["bs"] / 2048  # in sequences of 2048 tokens
    df.loc[0, "smooth loss"] = np.nan
    fit = fit_cli(tmp_path, df, "--n-col", "params", "--d-col", "tokens", "--lr-col", "peak_lr",
                  "--batch-col", "bs", "--batch-scale", 2048, "--loss-col", "smooth loss",
                  "--bootstrap", 0)
    assert fit["n_dropped_nan"] == 1 and fit["n_runs"] == 25 * 81 - 1
    assert fit["batch_law"]["coef"] == pytest.approx(BATCH[0], rel=1e-2)
    assert fit["batch_law"]["exp_D"] == pytest.approx(BATCH[1], abs=1e-2)


# ---------------------------------------------------------------- bad input


def user_error(tmp_path, capsys, df: pd.DataFrame, *extra) -> str:
    src, out = tmp_path / "sweep.csv", tmp_path / "fit.json"
    df.to_csv(src, index=False)
    argv = ["fit", "hparams", "--input", str(src), "--out", str(out), "--bootstrap", "0",
            *map(str, extra)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, no traceback
    assert not out.exists()
    return err


@pytest.mark.parametrize(("change", "extra", "fragments"), [
    (lambda df: df, ["--lr-col", "eta"], ["no column 'eta' (for lr)"]),
    (lambda df: df.drop(columns="D"), [], ["no column 'D' (for D)"]),
    (lambda df: df, ["--c-col", "flops"], ["no column 'flops' (--c-col)"]),
    (lambda df: df.assign(lr=df["lr"].where(df.index != 5, 0.0)), [],
     ["column 'lr'", "non-positive", "row 6"]),
    (lambda df: df.assign(loss=np.nan), [], ["0 usable row(s)", "NaN"]),
    (lambda df: df[(df["N"] == SIZES[0]) & (df["D"] == TOKENS[0])], [],
     ["cannot fit lr_law", "fewer than 2 distinct N values"]),
    (lambda df: df, ["--near-optimal", -0.1], ["--near-optimal", "must be >= 0"]),
    (lambda df: df, ["--batch-scale", 0], ["--batch-scale", "must be positive"]),
])
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, change, extra, fragments):
    err = user_error(tmp_path, capsys, change(sweep()), *extra)
    assert err.startswith("scalinglab fit hparams: error: "), err
    for fragment in fragments:
        assert fragment in err, err


def test_no_near_optimal_runs_is_a_user_error():
    with pytest.raises(hparam_laws.HparamFitError, match="no near-optimal runs"):
        hparam_laws.fit_sweep([1.0], [2.0], [1e-3], [64.0], [np.nan])
