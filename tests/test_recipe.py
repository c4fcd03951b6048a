"""The recipe: the compute-optimal fit with its loss law, the shape near N, `plan` and its bad
input, the validation spec and the prediction check."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from scalinglab.cli import main as cli
from scalinglab.config import StudyConfig, from_dict, to_dict
from scalinglab.errors import UserError
from scalinglab.phases import recipe

LADDER = [{"n_layer": 2, "n_embd": 16, "n_head": 2}, {"n_layer": 2, "n_embd": 32, "n_head": 2},
          {"n_layer": 4, "n_embd": 96, "n_head": 4}]
A, K_N = 0.5, 0.01    # N_opt = K_N C^A
E_L, K_L = -0.05, 40.0  # L_opt = K_L C^E_L


def study(**top) -> StudyConfig:
    return from_dict(StudyConfig, {"tokenizer": {"vocab_size": 512},
                                   "model": {"block_size": 64, "sizes": LADDER},
                                   "training": {"batch_size": 16, "warmup_tokens": 4096},
                                   "isoflop": {"budgets": [1e12, 3e12, 1e13]},
                                   "validation": {"enabled": True}, **top})


def isoflop_runs(noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Exact parabolas in log N around known optima at five budgets."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in np.geomspace(1e12, 1e14, 5):
        n_opt, l_opt = K_N * c**A, K_L * c**E_L
        for k in np.linspace(-1.2, 1.2, 7):
            n = n_opt * math.exp(k)
            loss = l_opt + 0.05 * k * k + noise * rng.standard_normal()
            rows.append({"C": c, "N": n, "D": c / (6 * n), "loss": loss})
    return pd.DataFrame(rows)


def compute_fit(n_boot: int = 200, noise: float = 0.0) -> dict:
    return recipe.fit_compute_optimal(isoflop_runs(noise), to_dict(study()), n_boot=n_boot)


def test_compute_optimal_fit_recovers_allocation_and_loss_laws():
    fit = compute_fit()
    assert fit["a"] == pytest.approx(A, abs=1e-6)
    assert fit["k_n"] == pytest.approx(K_N, rel=1e-4)
    assert fit["b"] == pytest.approx(1 - A, abs=1e-6)
    assert fit["e_L"] == pytest.approx(E_L, abs=1e-6)
    assert fit["k_L"] == pytest.approx(K_L, rel=1e-4)
    assert fit["largest_budget"] == pytest.approx(1e14)
    # D/N = C / (6 N^2) = 1 / (6 K_N^2) at every budget when a = 0.5
    for value in fit["tokens_per_param"]["per_budget"].values():
        assert value == pytest.approx(1 / (6 * K_N**2), rel=1e-4)
    names = [p["name"] for p in fit["tokens_per_param"]["published"]]
    assert names == ["Chinchilla", "LLaMA 3", "MiniCPM"]
    assert len(fit["bootstrap"]["samples"]) == 200 - fit["bootstrap"]["n_failed"]


def test_noisy_loss_law_interval_holds_the_true_exponent():
    fit = compute_fit(n_boot=300, noise=0.002)
    low, high = fit["ci"]["e_L"]
    assert low <= E_L <= high
    low, high = fit["ci"]["a"]
    assert low <= A <= high


@pytest.mark.parametrize("n_target", [3e3, 2e4, 1.5e5, 1e6])
def test_shape_is_near_n_and_in_the_family_of_the_largest_size(n_target):
    cfg = study()
    shape = recipe.choose_shape(cfg, n_target)
    n = recipe._counts(cfg, shape).N
    assert abs(n / n_target - 1) <= recipe.N_TOLERANCE
    # d_head of the largest size (4, 96, 4) where it can come within 10%, else one of the ladder's
    assert shape.n_embd // shape.n_head == (8 if n_target < 5e3 else 24)


def test_recipe_evaluates_the_laws_at_the_compute():
    fit = compute_fit()
    C = 4e14
    out = recipe.make_recipe(fit, None, C)
    assert out["N"] == pytest.approx(K_N * C**A, rel=1e-4)
    assert out["tokens_per_param"] == pytest.approx(out["D"] / out["N"])
    assert out["predicted_loss"] == pytest.approx(K_L * C**E_L, rel=1e-4)
    low, high = out["predicted_loss_ci"]
    assert low * (1 - 1e-12) <= out["predicted_loss"] <= high * (1 + 1e-12)
    assert out["extrapolation"] == pytest.approx(4.0)
    shape = out["shape"]
    assert abs(shape["N"] / out["N"] - 1) <= recipe.N_TOLERANCE
    # the run spends C: tokens = C / FLOPs per token, in whole steps of the study's batch
    assert shape["tokens"] == out["steps"] * 16 * 64
    assert shape["tokens"] * shape["flops_per_token"] == pytest.approx(C, rel=1e-3)
    assert out["lr"] == 3e-3 and out["batch_tokens"] == 1024
    assert out["lr_source"].startswith("study config")


def test_recipe_takes_lr_and_batch_from_the_hparams_laws():
    hp = {"laws": {"lr_vs_C": {"coef": 0.3118, "exponent": -0.125, "samples": []},
                   "batch_vs_C": {"coef": 0.292, "exponent": 0.3271, "samples": []}}}
    C = 1e15
    out = recipe.make_recipe(compute_fit(), hp, C)
    assert out["lr"] == pytest.approx(0.3118 * C**-0.125)
    batch = 0.292 * C**0.3271
    assert out["batch_tokens_law"] == pytest.approx(batch)
    assert out["batch_size"] == round(batch / 64) and out["batch_tokens"] == 64 * round(batch / 64)


def test_recipe_refuses_a_compute_below_one_step():
    with pytest.raises(UserError, match="--compute"):
        recipe.make_recipe(compute_fit(n_boot=0), None, 1e6)


def test_plan_without_fits_exits_2_naming_the_file_and_target(tmp_path, capsys):
    assert cli.main(["recipe", "make", "--fits", str(tmp_path), "--compute", "1e15",
                     "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert "compute_optimal.json" in err and "snakemake results/fits/compute_optimal.json" in err
    (tmp_path / "compute_optimal.json").write_text(json.dumps(compute_fit(n_boot=20)))
    assert cli.main(["recipe", "make", "--fits", str(tmp_path), "--compute", "1e15",
                     "--out", str(tmp_path / "r.json")]) == 2
    assert "hparams.json" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
    assert cli.main(["recipe", "make", "--fits", str(tmp_path), "--compute", "1e5",
                     "--hparams", "config", "--out", str(tmp_path / "r.json")]) == 2
    assert "--compute" in capsys.readouterr().err
    assert cli.main(["recipe", "make", "--fits", str(tmp_path), "--compute", "1e15",
                     "--hparams", "config", "--out", str(tmp_path / "r.json")]) == 0
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["compute"] == 1e15 and written["shape"]["n_layer"] >= 1


def test_validation_compute_is_the_factor_times_the_largest_fitted_budget():
    cfg = study()
    assert recipe.validation_compute(cfg) == 4e13
    assert recipe.validation_ids(cfg) == ("val-C4e13", "C4e13")
    with_sweep = study(hparams={"enabled": True, "budgets": [1e12, 2e13], "lrs": [1e-3, 2e-3, 4e-3],
                                "batch_tokens": [512, 1024]})
    assert recipe.validation_compute(with_sweep) == 8e13
    with pytest.raises(UserError, match=r"validation\.compute_factor"):
        study(validation={"compute_factor": 0.5})


def test_validation_spec_follows_the_recipe():
    cfg = study()
    out = recipe.make_recipe(compute_fit(n_boot=0), None, recipe.validation_compute(cfg))
    spec = recipe.validation_spec(cfg, out)
    assert spec["series_id"] == "val-C4e13"
    for key in ("n_layer", "n_embd", "n_head"):
        assert spec["model"][key] == out["shape"][key]
    (branch,) = spec["branches"]
    assert branch["label"] == "C4e13" and branch["total_steps"] == out["steps"]
    assert branch["decay_start"] == out["steps"] - round(0.2 * out["steps"])
    assert spec["stable_steps"] == branch["decay_start"]
    with pytest.raises(UserError, match=r"validation\.compute_factor.*epochs"):
        recipe.validation_spec(cfg, out, train_tokens=1000)


def test_validate_compares_the_prediction_with_the_run():
    out = {"compute": 4e13, "extrapolation": 4.0, "predicted_loss": 4.0,
           "predicted_loss_ci": [3.9, 4.2], "interval_level": 0.95, "N": 5e4}
    record = {"final_val_loss": 4.1, "run_id": "val-C4e13_C4e13", "D": 10**6,
              "spec": {"N": 51000, "model": {"n_layer": 2, "n_embd": 48, "n_head": 2,
                                             "block_size": 64},
                       "training": {"lr": 3e-3, "batch_size": 16}}}
    result = recipe.validate(out, record)
    assert result["relative_error"] == pytest.approx(0.025)
    assert result["abs_relative_error"] == pytest.approx(0.025)
    assert result["inside_interval"] and result["batch_tokens"] == 1024
    record["final_val_loss"] = 3.8
    assert not recipe.validate(out, record)["inside_interval"]


def test_under_mup_the_shape_is_never_narrower_than_the_base_width():
    # under SP the nearest shape to 1.5e3 parameters is narrower than 16 ...
    assert recipe.choose_shape(study(), 1.5e3).n_embd == 8
    # ... which muP with base_width 16 cannot build: the recipe takes the nearest from 16 up
    cfg = study(parametrization={"name": "mup", "base_width": 16})
    shape = recipe.choose_shape(cfg, 1.5e3)
    assert (shape.n_layer, shape.n_embd) == (1, 16)
    assert recipe._counts(cfg, shape).N == 3120
