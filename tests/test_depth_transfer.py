"""The depth-transfer phase: its run table, its bad input, and the analysis along depth."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from helpers import REPO, sweep_dry_run, sweep_end_to_end, sweep_fit, synthetic_sweep
from scalinglab.cli import main as cli
from scalinglab.config import StudyConfig, from_dict
from scalinglab.errors import UserError
from scalinglab.phases import depth_transfer, study

DEPTH_CONFIG = str(REPO / "workflow/configs/depth_transfer.yaml")

SECTION = {"enabled": True, "depths": [2, 4, 8], "n_embd": 32, "n_head": 2,
           "lrs": [4.0e-3, 8.0e-3, 1.6e-2, 3.2e-2], "seeds": [0, 1], "tokens": 65536}
STUDY = {"parametrization": {"name": "mup", "base_width": 16, "base_depth": 2},
         "model": {"block_size": 64, "sizes": [{"n_layer": 2, "n_embd": 16, "n_head": 1}]},
         "training": {"batch_size": 8, "warmup_tokens": 2048}, "depth_transfer": SECTION}


def config(section=None, parametrization=None, **top) -> StudyConfig:
    """A small study with the phase on: `section` and `parametrization` update its keys."""
    data = json.loads(json.dumps(STUDY))
    data["depth_transfer"].update(section or {})
    data["parametrization"].update(parametrization or {})
    return from_dict(StudyConfig, data | top)


def test_plan_has_one_run_per_depth_lr_parametrization_and_seed():
    table = depth_transfer.plan(config())
    assert len(table) == 2 * 3 * 4 * 2  # parametrizations x depths x lrs x seeds
    assert table["run_id"].is_unique and table["series_id"].is_unique
    assert sorted(table["n_layer"].unique()) == [2, 4, 8]
    assert set(table["n_embd"]) == {32} and set(table["phase"]) == {"depth_transfer"}
    assert sorted(table["parametrization"].unique()) == ["completep", "mup"]
    per_point = table.groupby(["parametrization", "n_layer", "lr"]).size()
    assert len(per_point) == 2 * 3 * 4 and set(per_point) == {2}
    row = table[(table["parametrization"] == "completep") & (table["n_layer"] == 8)
                & (table["lr"] == 1.6e-2) & (table["seed"] == 1)].iloc[0]
    # 65536 tokens / (8 x 64 tokens per step) = 128 steps
    assert row["series_id"] == "dpt-completep-l8-d32-h2-lr1.6e-02-b8-s1"
    assert row["run_id"] == "dpt-completep-l8-d32-h2-lr1.6e-02-b8-s1_D65536"
    assert row["steps"] == 128
    # a deeper model has more parameters, so more FLOPs per token
    c = table[(table["parametrization"] == "mup") & (table["lr"] == 4e-3)
              & (table["seed"] == 0)].set_index("n_layer")["flops_per_token"]
    assert c[2] < c[4] < c[8]


def test_disabled_phase_plans_nothing():
    assert depth_transfer.plan(config({"enabled": False})).empty
    assert depth_transfer.plan(from_dict(StudyConfig, {})).empty


def test_specs_carry_each_parametrization_and_its_depth_keys():
    cfg = config()
    table = depth_transfer.plan(cfg)
    cp = depth_transfer.series_spec(cfg, table, "dpt-completep-l8-d32-h2-lr8e-03-b8-s0")
    cp = cp.to_dict()
    assert cp["phase"] == "depth_transfer" and cp["model"]["n_layer"] == 8
    assert cp["parametrization"]["name"] == "completep"
    assert cp["parametrization"]["base_depth"] == 2
    # CompleteP's branch multiplier m_d^-1 = 2 / 8 on a spec built from the row
    assert cp["model"]["residual_scale"] == pytest.approx(0.25)
    mup = depth_transfer.series_spec(cfg, table, "dpt-mup-l8-d32-h2-lr8e-03-b8-s0").to_dict()
    assert mup["parametrization"]["name"] == "mup" and "base_depth" not in mup["parametrization"]
    assert mup["model"]["residual_scale"] == 1.0 and mup["training"]["lr"] == 8e-3
    with pytest.raises(UserError, match="unknown depth_transfer run"):
        depth_transfer.series_spec(cfg, table, "dpt-nope")


@pytest.mark.parametrize(
    "section, parametrization, key",
    [
        ({"depths": [2, 8]}, {}, "depth_transfer.depths"),  # fewer than 3 depths
        ({"depths": [2]}, {}, "depth_transfer.depths"),
        ({"depths": [1, 2, 8]}, {}, "parametrization.base_depth"),  # base_depth 2 > depth 1
        ({}, {"base_depth": 4}, "parametrization.base_depth"),
        ({"depths": [2, 8, 4]}, {}, "depth_transfer.depths"),  # not ascending
        ({"depths": [2, 4, 4]}, {}, "depth_transfer.depths"),
        ({"n_embd": 8, "n_head": 2}, {}, "depth_transfer.n_embd"),  # below base_width 16
        ({"n_embd": 48, "n_head": 2}, {"base_width": 32}, "depth_transfer.n_embd"),
        ({"n_embd": 33}, {}, "depth_transfer.n_head"),
        ({"lrs": [4e-3, 8e-3]}, {}, "depth_transfer.lrs"),
        ({"lrs": [8e-3, 4e-3, 1.6e-2]}, {}, "depth_transfer.lrs"),
        ({"parametrizations": ["mup", "sp"]}, {}, "depth_transfer.parametrizations[1]"),
        ({"tokens": 1024}, {}, "depth_transfer.tokens"),
        ({"bogus": 1}, {}, "depth_transfer.bogus"),
    ],
)
def test_bad_input_names_the_key(section, parametrization, key):
    with pytest.raises(UserError) as err:
        depth_transfer.plan(config(section, parametrization))
    assert key in str(err.value)


def test_base_depth_only_binds_completep():
    table = depth_transfer.plan(config({"parametrizations": ["mup"], "depths": [1, 2, 4]},
                                       {"base_depth": 4}))
    assert sorted(table["n_layer"].unique()) == [1, 2, 4]


def test_completep_ladder_shallower_than_base_depth_is_refused():
    cfg = config({"enabled": False}, {"name": "completep", "base_depth": 4})
    with pytest.raises(UserError, match=r"parametrization\.base_depth.*n_layer=2"):
        study.plan_isoflop(cfg)


def test_plan_cli_bad_input_is_exit_2_naming_the_key(tmp_path, capsys):
    spec = tmp_path / "study.json"
    spec.write_text(json.dumps({"parametrization": {"base_width": 16, "base_depth": 4},
                                "depth_transfer": SECTION}))
    out = tmp_path / "plan.csv"
    assert cli.main(["depth-transfer", "plan", "--config", str(spec), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "parametrization.base_depth" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    spec.write_text(json.dumps({"depth_transfer": dict(SECTION, depths=[2, 4])}))
    assert cli.main(["check-config", str(spec)]) == 2
    assert "depth_transfer.depths" in capsys.readouterr().err
    assert not out.exists()


# -- analysis on synthetic numbers -----------------------------------------------------------------
def synthetic_runs(slopes: dict[str, float], depths=(2, 4, 8), noise=0.0, seed=0):
    """Runs whose loss is a parabola in log2 lr around eta*(L) = 8e-3 (L / 2)^slope."""
    return synthetic_sweep(slopes, depths, axis="n_layer", eta0=8e-3, noise=noise, seed=seed,
                           fixed={"width": 32})


def test_analyse_recovers_the_best_lr_per_depth_and_its_drift():
    fit = depth_transfer.analyse(synthetic_runs({"completep": 0.0, "mup": -0.6}))
    assert fit["width"] == 32 and fit["grid_step_log2"] == pytest.approx(1.0)
    cp, mup = fit["parametrizations"]["completep"], fit["parametrizations"]["mup"]
    assert cp["depths"] == mup["depths"] == [2, 4, 8]
    assert cp["best_lr"] == pytest.approx([8e-3] * 3, rel=1e-9)
    # the parabola finds eta* between grid points: 8e-3 x 2^-0.6 and x 2^-1.2
    assert mup["best_lr"] == pytest.approx([8e-3, 8e-3 * 2**-0.6, 8e-3 * 2**-1.2], rel=1e-9)
    assert mup["grid_best_lr"] == [8e-3, 4e-3, 4e-3]
    assert cp["slope"] == pytest.approx(0.0, abs=1e-9)
    assert mup["slope"] == pytest.approx(-0.6, abs=1e-9)
    assert mup["spread_grid_steps"] == pytest.approx(1.2, abs=1e-9)
    assert mup["drift_grid_steps"] == pytest.approx(-1.2, abs=1e-9)
    assert cp["depth_range"] == mup["depth_range"] == 4.0
    assert cp["transfers"] is True and mup["transfers"] is False
    assert "width_range" not in cp


def test_transfers_within_one_grid_step_and_over_a_4x_depth_range():
    fit = depth_transfer.analyse(synthetic_runs({"completep": -0.45, "mup": 0.55}))
    cp, mup = fit["parametrizations"]["completep"], fit["parametrizations"]["mup"]
    assert cp["spread_grid_steps"] == pytest.approx(0.9, abs=1e-9) and cp["transfers"]
    assert mup["spread_grid_steps"] == pytest.approx(1.1, abs=1e-9)
    assert mup["drift_grid_steps"] == pytest.approx(1.1, abs=1e-9) and not mup["transfers"]
    narrow = depth_transfer.analyse(synthetic_runs({"completep": 0.0}, depths=(2, 3, 4)))
    assert narrow["parametrizations"]["completep"]["depth_range"] == 2.0
    assert narrow["parametrizations"]["completep"]["transfers"] is False


def test_analyse_with_noise_keeps_the_verdicts():
    fit = depth_transfer.analyse(synthetic_runs({"completep": 0.0, "mup": -1.0}, noise=0.003))
    assert fit["parametrizations"]["completep"]["transfers"] is True
    assert fit["parametrizations"]["mup"]["slope"] < -0.7


def test_cli_writes_fit_table_and_figure(tmp_path, capsys):
    runs = synthetic_runs({"completep": 0.0, "mup": -0.6})
    fit, rows, png = sweep_fit("depth-transfer", tmp_path, runs)
    assert fit["parametrizations"]["mup"]["slope"] == pytest.approx(-0.6, abs=1e-9)
    assert fit["parametrizations"]["completep"]["transfers"] is True
    assert rows == len(runs) and png == b"\x89PNG\r\n\x1a\n"
    assert "completep: eta* by depth 2: 0.008" in capsys.readouterr().out


# -- the workflow ----------------------------------------------------------------------------------
TINY_PHASE = """
depth_transfer:
  enabled: true
  depths: [1, 2, 4]
  n_embd: 16
  lrs: [4.0e-3, 1.6e-2, 6.4e-2]
  tokens: 4096
parametrization:
  base_depth: 1
"""


def test_dry_run_plans_two_jobs_per_run_and_one_fit(tmp_path):
    counts, cfg = sweep_dry_run(tmp_path, "results/figures/depth_transfer.png", DEPTH_CONFIG)
    runs = len(depth_transfer.plan(cfg))
    assert runs == 2 * 3 * 6 * 2  # {muP, CompleteP} x depths 2, 4, 8 x 6 LRs x 2 seeds
    assert counts["write_spec"] == runs + 1  # and the corpus spec
    assert counts["train_stable_depth_transfer"] == runs
    # config.yaml's resources.branch_jobs: series, one job per series (a run has one branch)
    assert sum(n for rule, n in counts.items()
               if rule.startswith("decay_branches_depth_transfer_")) == runs
    assert counts["fit_depth_transfer"] == 1
    assert "train_stable_isoflop" not in counts and "train_stable_lr_transfer" not in counts


@pytest.mark.slow
def test_tiny_phase_end_to_end(tmp_path):
    fit = sweep_end_to_end(tmp_path, "depth_transfer", TINY_PHASE)
    assert set(fit["parametrizations"]) == {"mup", "completep"} and fit["width"] == 16
    for res in fit["parametrizations"].values():
        assert res["depths"] == [1, 2, 4] and res["depth_range"] == 4.0
        assert all(4e-3 <= lr <= 6.4e-2 for lr in res["best_lr"])
        assert math.isfinite(res["slope"]) and isinstance(res["transfers"], bool)
    runs = pd.read_csv(tmp_path / "results" / "muP" / "depth_transfer_runs.csv")
    assert len(runs) == 2 * 3 * 3 and runs["loss"].between(0.5, 7.0).all()
