"""Law fits on synthetic data with known answers: exact recovery, intervals, drops and errors."""

import numpy as np
import pytest
from scipy.optimize import approx_fprime
from scipy.special import huber as scipy_huber

from scalinglab.fitting.allocation import allocation_samples_at, budget_labels
from scalinglab.fitting.envelope import bootstrap_envelope, fit_envelope
from scalinglab.fitting.inputs import FitError
from scalinglab.fitting.isoflop import bootstrap_isoflop, fit_isoflop
from scalinglab.fitting.parametric import (
    bootstrap_parametric,
    compute_optimal,
    fit_parametric,
    fit_parametric_varpro,
    huber,
    parametric_objective,
)
from scalinglab.fitting.powerlaw import bootstrap_power_law, fit_power_law, fit_power_law_offset

TRUE = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}  # Hoffmann et al., eq. 10
A_TRUE = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])


def chinchilla(N, D, p=TRUE):
    return p["E"] + p["A"] / np.asarray(N) ** p["alpha"] + p["B"] / np.asarray(D) ** p["beta"]


def grid_points():
    N, D = np.meshgrid(np.geomspace(1e7, 1e10, 8), np.geomspace(1e9, 1e12, 8))
    return N.ravel(), D.ravel()


BUDGETS = np.geomspace(1e18, 1e22, 5)


def isoflop_table(budgets=BUDGETS, sizes_per_budget=9, span=8.0):
    rows = []
    for C in budgets:
        n_opt, _ = compute_optimal(TRUE, C)
        for n in n_opt * np.geomspace(1 / span, span, sizes_per_budget):
            rows.append((C, n, chinchilla(n, C / (6 * n))))
    return tuple(np.array(c) for c in zip(*rows, strict=True))


# ---------------------------------------------------------------- Method 3


def test_huber_matches_scipy():
    r = np.linspace(-0.01, 0.01, 41)
    np.testing.assert_allclose(huber(r, 1e-3), scipy_huber(1e-3, r), rtol=0, atol=1e-18)


def test_objective_gradient_matches_finite_differences():
    N, D = grid_points()
    rng = np.random.default_rng(0)
    log_loss = np.log(chinchilla(N, D)) + 0.02 * rng.standard_normal(len(N))
    args = (np.log(N), np.log(D), log_loss, 0.05)  # wide delta: both Huber branches are hit
    theta = np.array([6.0, 6.0, 0.5, 0.35, 0.3])
    _, grad = parametric_objective(theta, *args)
    numeric = approx_fprime(theta, lambda t: parametric_objective(t, *args)[0], 1e-7)
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-7)


def test_objective_is_summed_not_averaged():
    N, D = grid_points()
    args = (np.log(N), np.log(D), np.log(chinchilla(N, D)) + 0.01, 1e-3)
    theta = np.log([TRUE["A"], TRUE["B"], TRUE["E"]]).tolist() + [TRUE["alpha"], TRUE["beta"]]
    value, _ = parametric_objective(np.array(theta), *args)
    # every log residual is 0.01 > delta, so each point contributes delta (0.01 - delta/2)
    assert value == pytest.approx(len(N) * 1e-3 * (0.01 - 0.5e-3), rel=1e-9)


def test_parametric_recovers_noise_free_parameters():
    N, D = grid_points()
    fit = fit_parametric(N, D, chinchilla(N, D))
    assert abs(fit.alpha - TRUE["alpha"]) < 1e-2
    assert abs(fit.beta - TRUE["beta"]) < 1e-2
    assert fit.E == pytest.approx(TRUE["E"], abs=1e-3)
    assert fit.a == pytest.approx(A_TRUE, abs=1e-3)
    assert fit.n_points == 64 and fit.fixed == ()


def test_parametric_fix_alpha_holds_it_and_fits_the_rest():
    N, D = grid_points()
    fit = fit_parametric(N, D, chinchilla(N, D), fix_alpha=0.34)
    assert fit.alpha == 0.34
    assert fit.beta == pytest.approx(TRUE["beta"], abs=1e-3)
    assert fit.fixed == ("alpha",)


def test_bootstrap_interval_contains_truth_with_one_percent_noise():
    N, D = grid_points()
    rng = np.random.default_rng(1)
    loss = chinchilla(N, D) * np.exp(0.01 * rng.standard_normal(len(N)))
    fit = fit_parametric(N, D, loss)
    boot = bootstrap_parametric(N, D, loss, fit, n_boot=200, seed=0, workers=1)
    for name in ("E", "alpha", "beta"):
        low, high = boot.interval(name)
        assert low < TRUE[name] < high, (name, low, high)
    low, high = boot.interval("a")
    assert low < A_TRUE < high


def test_bootstrap_is_seeded_and_independent_of_worker_count():
    N, D = grid_points()
    loss = chinchilla(N, D) * np.exp(0.01 * np.random.default_rng(2).standard_normal(len(N)))
    fit = fit_parametric(N, D, loss, n_starts=8)
    one = bootstrap_parametric(N, D, loss, fit, n_boot=12, seed=5, workers=1)
    two = bootstrap_parametric(N, D, loss, fit, n_boot=12, seed=5, workers=2)
    other = bootstrap_parametric(N, D, loss, fit, n_boot=12, seed=6, workers=1)
    np.testing.assert_array_equal(one.samples, two.samples)
    assert not np.array_equal(one.samples, other.samples)
    assert one.names == ("E", "A", "B", "alpha", "beta", "a", "b")


def test_compute_optimal_is_the_minimum_on_the_isoflop_line():
    C = 1e21
    n_opt, d_opt = compute_optimal(TRUE, C)
    assert 6 * n_opt * d_opt == pytest.approx(C, rel=1e-12)
    n = n_opt * np.geomspace(0.5, 2, 2001)
    best = n[np.argmin(chinchilla(n, C / (6 * n)))]
    assert best == pytest.approx(n_opt, rel=2e-3)
    # the exponent of the closed form is a = beta/(alpha + beta)
    n_big, _ = compute_optimal(TRUE, 1e4 * C)
    assert np.log(n_big / n_opt) / np.log(1e4) == pytest.approx(A_TRUE, abs=1e-12)


def test_varpro_recovers_noise_free_parameters():
    N, D = grid_points()
    fit = fit_parametric_varpro(N, D, chinchilla(N, D))
    assert fit.alpha == pytest.approx(TRUE["alpha"], abs=1e-4)
    assert fit.beta == pytest.approx(TRUE["beta"], abs=1e-4)
    assert fit.E == pytest.approx(TRUE["E"], abs=1e-4)
    assert fit.A == pytest.approx(TRUE["A"], rel=1e-3)
    assert fit.method == "varpro-nnls"


def test_parametric_rejects_bad_input():
    with pytest.raises(FitError, match="free parameters"):
        fit_parametric([1e8, 2e8, 4e8, 8e8, 1e9], [1e9] * 5, [3.0] * 5)
    with pytest.raises(FitError, match="positive"):
        fit_parametric([1e8, -1, 4e8, 8e8, 1e9, 2e9], [1e9] * 6, [3.0] * 6)


# ---------------------------------------------------------------- Method 2


def test_isoflop_gives_back_a_from_chinchilla_data():
    C, N, loss = isoflop_table()
    fit = fit_isoflop(C, N, loss)
    assert fit.a == pytest.approx(A_TRUE, abs=1e-6)
    assert fit.b == pytest.approx(1 - A_TRUE, abs=1e-6)
    assert len(fit.budgets) == 5 and fit.dropped == ()
    for b in fit.budgets:
        # D_opt follows the budget's own D-N line: C = 6ND exactly
        assert 6 * b.N_opt * b.D_opt == pytest.approx(b.C, rel=1e-9)
        assert b.inside_range and b.tokens_per_param == pytest.approx(b.D_opt / b.N_opt)


def test_isoflop_uses_the_given_token_counts():
    C, N, loss = isoflop_table()
    fit = fit_isoflop(C, N, loss, D=2 * C / (6 * N))  # e.g. a FLOP count of 3ND
    for b in fit.budgets:
        assert 3 * b.N_opt * b.D_opt == pytest.approx(b.C, rel=1e-9)


def test_isoflop_drops_budgets_with_reasons():
    C, N, loss = isoflop_table()
    extra_c = np.array([3e22, 3e22, 5e22, 5e22, 5e22, 5e22])
    extra_n = np.array([1e10, 2e10, 1e10, 2e10, 4e10, 8e10])
    extra_loss = np.array([2.0, 2.1, 2.0, 2.2, 2.3, 2.2])  # 5e22 is concave in log N
    fit = fit_isoflop(np.r_[C, extra_c], np.r_[N, extra_n], np.r_[loss, extra_loss])
    reasons = {d.C: d.reason for d in fit.dropped}
    assert "fewer than 3" in reasons[3e22]
    assert "non-positive curvature" in reasons[5e22]
    assert fit.a == pytest.approx(A_TRUE, abs=1e-6)


def test_isoflop_needs_two_budgets():
    C, N, loss = isoflop_table(budgets=[1e20])
    with pytest.raises(FitError, match="1 usable compute budget"):
        fit_isoflop(C, N, loss)


def test_isoflop_bootstrap_is_seeded_and_covers_truth():
    C, N, loss = isoflop_table(sizes_per_budget=11)
    noisy = loss * np.exp(0.003 * np.random.default_rng(3).standard_normal(len(loss)))
    first = bootstrap_isoflop(C, N, noisy, n_boot=300, seed=1)
    again = bootstrap_isoflop(C, N, noisy, n_boot=300, seed=1)
    np.testing.assert_array_equal(first.samples, again.samples)
    low, high = first.interval("a")
    assert low < A_TRUE < high and high - low < 0.1
    assert first.names == ("a", "k_n", "b", "k_d")
    at = allocation_samples_at(first, 1e21)
    low, high = np.percentile(at["tokens_per_param"], [2.5, 97.5])
    n_true, d_true = compute_optimal(TRUE, 1e21)
    assert low < d_true / n_true < high


# ---------------------------------------------------------------- Method 1


def curves_table(n_sizes=25):
    rows = []
    for k, n in enumerate(np.geomspace(1e7, 1e10, n_sizes)):
        for d in np.geomspace(1e8, 1e12, 60):
            rows.append((f"r{k}", n, d, 6 * n * d, chinchilla(n, d)))
    run, N, D, C, loss = zip(*rows, strict=True)
    return np.array(run), np.array(C), np.array(N), np.array(loss), np.array(D)


def test_envelope_of_curves_tracks_the_true_allocation():
    run, C, N, loss, D = curves_table()
    fit = fit_envelope(run, C, N, loss, D, grid_points=40)
    assert fit.a == pytest.approx(A_TRUE, abs=0.01)
    assert {d.reason for d in fit.dropped} <= {"reached by only one run", "reached by no run"}
    step = (1e10 / 1e7) ** (1 / 24)  # ratio between neighbouring model sizes
    for b in fit.budgets:
        n_true, _ = compute_optimal(TRUE, b.C)
        assert 1 / step <= b.N_opt / n_true <= step  # the envelope picks a neighbouring size
        assert b.loss_opt == pytest.approx(chinchilla(b.N_opt, b.D_opt), rel=1e-3)


def test_envelope_of_final_points_is_argmin_per_budget():
    C, N, loss = isoflop_table()
    fit = fit_envelope(np.arange(len(C)), C, N, loss)
    assert len(fit.budgets) == 5
    for b in fit.budgets:
        rows = C == b.C
        assert b.N_opt == N[rows][np.argmin(loss[rows])]
        assert b.loss_opt == loss[rows].min()


def test_envelope_bootstrap_covers_truth():
    run, C, N, loss, D = curves_table()
    boot = bootstrap_envelope(run, C, N, loss, D, grid_points=40, n_boot=60, seed=0)
    low, high = boot.interval("a")
    assert low - 0.01 < A_TRUE < high + 0.01


# ---------------------------------------------------------------- power laws


def test_power_law_exact():
    x = np.geomspace(1e17, 1e21, 12)
    fit = fit_power_law(x, 0.3118 * x**-0.125)
    assert fit.coef == pytest.approx(0.3118, rel=1e-9)
    assert fit.exponent == pytest.approx(-0.125, abs=1e-12)
    assert fit.offset is None and fit.rss < 1e-20


def test_power_law_with_offset_exact():
    x = np.geomspace(1e17, 1e21, 12)
    fit = fit_power_law_offset(x, 1.8 + 50 * x**-0.1)
    assert (fit.offset, fit.coef, fit.exponent) == pytest.approx((1.8, 50, -0.1), rel=1e-6)
    np.testing.assert_allclose(fit.predict(x), 1.8 + 50 * x**-0.1, rtol=1e-9)


def test_power_law_bootstrap_covers_truth():
    x = np.geomspace(1e17, 1e21, 16)
    rng = np.random.default_rng(4)
    y = 0.3118 * x**-0.125 * np.exp(0.02 * rng.standard_normal(len(x)))
    boot = bootstrap_power_law(x, y, n_boot=500, seed=0)
    low, high = boot.interval("exponent")
    assert low < -0.125 < high
    y_off = (1.8 + 50 * x**-0.1) * np.exp(0.002 * rng.standard_normal(len(x)))
    boot = bootstrap_power_law(x, y_off, offset=True, n_boot=100, seed=0)
    low, high = boot.interval("exponent")
    assert low < -0.1 < high
    assert boot.names == ("coef", "exponent", "offset")


def test_power_law_needs_enough_points():
    with pytest.raises(FitError, match="too few"):
        fit_power_law([1.0, 2.0], [1.0, 2.0])
    with pytest.raises(FitError, match="too few"):
        fit_power_law_offset([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])


def test_budgets_equal_up_to_rounding_are_one_budget():
    C = np.array([1e20, 1e20 * (1 + 1e-12), 3e20, 1e20 * (1 - 1e-13), 3e20, 3.3e20])
    values, labels = budget_labels(C)
    assert values[1] == 3e20 and values[2] == 3.3e20  # a shared value stays exact
    assert values[0] == pytest.approx(1e20, rel=1e-12)
    np.testing.assert_array_equal(labels, [0, 0, 1, 0, 1, 2])
