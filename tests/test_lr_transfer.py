"""The LR-transfer phase: its run table and ids, its specs, and the parabola / slope analysis."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from helpers import (
    REPO,
    job_counts,
    snakemake,
    sweep_dry_run,
    sweep_end_to_end,
    sweep_fit,
    synthetic_sweep,
)
from scalinglab.cli import main as cli
from scalinglab.config import StudyConfig, from_dict
from scalinglab.errors import UserError
from scalinglab.phases import lr_transfer

# the full study: config.yaml with the LR-transfer phase and the validation run on
FULL = str(REPO / "workflow/configs/full.yaml")

SECTION = {"enabled": True, "widths": [32, 64], "n_layer": 2, "n_head": 2,
           "lrs": [2.0e-3, 4.0e-3, 8.0e-3], "seeds": [0, 1], "tokens": 65536}


def config(section=None, **top) -> StudyConfig:
    data = {"parametrization": {"base_width": 32},
            "model": {"block_size": 64, "sizes": [{"n_layer": 1, "n_embd": 16, "n_head": 1}]},
            "training": {"batch_size": 8, "warmup_tokens": 2048},
            "lr_transfer": dict(SECTION, **(section or {})), **top}
    return from_dict(StudyConfig, data)


def test_plan_has_one_run_per_grid_point_with_canonical_ids():
    table = lr_transfer.plan(config())
    assert len(table) == 2 * 2 * 3 * 2  # parametrizations x widths x lrs x seeds
    assert table["run_id"].is_unique and table["series_id"].is_unique
    row = table[(table["parametrization"] == "mup") & (table["n_embd"] == 64)
                & (table["lr"] == 4e-3) & (table["seed"] == 1)].iloc[0]
    # 65536 tokens / (8 x 64 tokens per step) = 128 steps; WSD decays over the last 20%
    assert row["series_id"] == "lrt-mup-l2-d64-h2-lr4e-03-b8-s1"
    assert row["run_id"] == "lrt-mup-l2-d64-h2-lr4e-03-b8-s1_D65536"
    assert (row["steps"], row["decay_start"], row["stable_steps"]) == (128, 102, 102)
    assert row["warmup_steps"] == 4 and row["D"] == 65536
    assert set(table["label"]) == {"D65536"}
    assert (table["C_actual"] == table["flops_per_token"] * 65536).all()


def test_tokens_round_to_whole_steps():
    table = lr_transfer.plan(config({"tokens": 65536 + 100}))
    assert set(table["D"]) == {65536}


def test_disabled_phase_plans_nothing():
    assert lr_transfer.plan(config({"enabled": False})).empty
    assert lr_transfer.plan(from_dict(StudyConfig, {})).empty


def test_full_config_switches_the_phase_on_with_a_valid_grid():
    cfg = from_dict(StudyConfig, cli.merged_config([str(REPO / "config.yaml"), FULL]))
    table = lr_transfer.plan(cfg)
    assert cfg.lr_transfer.enabled and not table.empty
    widths = sorted(table["n_embd"].unique())
    assert widths[-1] / widths[0] >= 4  # the issue's >= 4x width range
    ratios = np.diff(np.log2(sorted(table["lr"].unique())))
    assert np.allclose(ratios, 1.0)  # log2-spaced grid


def test_spec_is_what_the_trainer_reads():
    cfg = config()
    table = lr_transfer.plan(cfg)
    sid = "lrt-mup-l2-d64-h2-lr8e-03-b8-s1"
    spec = lr_transfer.series_spec(cfg, table, sid).to_dict()
    assert spec["series_id"] == sid and spec["phase"] == "lr_transfer"
    assert spec["seed"] == 1
    assert spec["parametrization"]["name"] == "mup"
    assert spec["training"]["lr"] == 8e-3
    assert spec["training"]["eval_every"] == 128  # evals only at the branch point and the end
    assert spec["model"]["n_embd"] == 64 and spec["model"]["n_head"] == 2
    assert spec["model"]["logit_scale"] == 0.5  # muP: output_mult / m with m = 64 / 32
    assert spec["model"]["attn_scale"] == 1 / 32  # muP: 1 / d_head
    assert spec["stable_steps"] == 102
    assert spec["branches"] == [{"label": "D65536", "run_id": f"{sid}_D65536", "C": pytest.approx(
        table.set_index("series_id").loc[sid, "C"]), "D": 65536, "total_steps": 128,
        "decay_start": 102, "trained": True}]
    sp = lr_transfer.series_spec(cfg, table, "lrt-sp-l2-d64-h2-lr8e-03-b8-s1").to_dict()
    assert sp["model"]["logit_scale"] == 1.0 and sp["model"]["attn_scale"] == 1 / math.sqrt(32)
    with pytest.raises(UserError, match="unknown lr_transfer run"):
        lr_transfer.series_spec(cfg, table, "lrt-nope")


@pytest.mark.parametrize(
    ("section", "top", "key"),
    [
        ({"widths": [32, 16]}, {}, "lr_transfer.widths[1]"),  # below base_width = 32
        ({"widths": [32, 48]}, {}, "lr_transfer.widths[1]"),  # 32 does not divide 48
        ({"widths": [32, 33]}, {}, "lr_transfer.widths[1]"),  # n_head = 2 does not divide 33
        ({"widths": [32]}, {}, "lr_transfer.widths"),
        ({"lrs": [4e-3, 2e-3, 8e-3]}, {}, "lr_transfer.lrs"),
        ({"lrs": [2e-3, 4e-3]}, {}, "lr_transfer.lrs"),
        ({"lrs": [2e-3, 4e-3, -1.0]}, {}, "lr_transfer.lrs[2]"),
        ({"parametrizations": ["sp", "mupp"]}, {}, "lr_transfer.parametrizations[1]"),
        ({"seeds": [0, 0]}, {}, "lr_transfer.seeds"),
        ({"tokens": 1024}, {}, "lr_transfer.tokens"),  # the decay would start inside warmup
        ({"bogus": 1}, {}, "lr_transfer.bogus"),
    ],
)
def test_bad_input_names_the_key(section, top, key):
    with pytest.raises(UserError) as err:
        lr_transfer.plan(config(section, **top))
    assert key in str(err.value)


def test_sp_only_phase_ignores_base_width():
    table = lr_transfer.plan(config({"parametrizations": ["sp"], "widths": [16, 48]}))
    assert sorted(table["n_embd"].unique()) == [16, 48]


def test_plan_cli_bad_input_is_exit_2_naming_the_key(tmp_path, capsys):
    spec = tmp_path / "study.json"
    data = json.loads(json.dumps(SECTION))
    data["widths"] = [16, 64]
    spec.write_text(json.dumps({"parametrization": {"base_width": 32}, "lr_transfer": data}))
    out = tmp_path / "plan.csv"
    assert cli.main(["lr-transfer", "plan", "--config", str(spec), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "lr_transfer.widths[0]" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


# -- analysis on synthetic numbers -----------------------------------------------------------------
def test_best_lr_recovers_the_vertex_of_a_parabola():
    lrs = 1e-3 * 2.0 ** np.arange(6)
    true = math.log2(5e-3)
    losses = 3.0 + 0.1 * (np.log2(lrs) - true) ** 2
    best = lr_transfer.best_lr(lrs, losses)
    assert best["lr"] == pytest.approx(5e-3, rel=1e-9)
    assert best["loss"] == pytest.approx(3.0)
    assert best["edge"] is False and best["grid_lr"] == 4e-3


def test_best_lr_at_the_grid_edge_is_not_extrapolated():
    lrs = [1e-3, 2e-3, 4e-3]
    best = lr_transfer.best_lr(lrs, [3.0, 3.1, 3.2])
    assert best == {"lr": 1e-3, "loss": 3.0, "edge": True, "grid_lr": 1e-3}


def test_diverged_points_are_left_out_of_the_parabola():
    lrs = 1e-3 * 2.0 ** np.arange(5)
    losses = 3.0 + 0.1 * (np.log2(lrs) - math.log2(3e-3)) ** 2
    losses[3] = np.nan  # 8e-3 diverged
    losses[4] = 2.0  # the lowest loss, but with no valid neighbour above it: an edge
    best = lr_transfer.best_lr(lrs, losses)
    assert best["grid_lr"] == 1.6e-2 and best["edge"] is True
    losses[4] = np.nan  # now 4e-3, the lowest loss, is the last valid point
    best = lr_transfer.best_lr(lrs, losses)
    assert best["grid_lr"] == 4e-3 and best["edge"] is True


def synthetic_runs(slopes: dict[str, float], widths=(32, 64, 128), noise=0.0, seed=0):
    """Runs whose loss is a parabola in log2 lr around eta*(w) = 4e-3 (w / 32)^slope."""
    return synthetic_sweep(slopes, widths, axis="width", eta0=4e-3, seeds=(0, 1), noise=noise,
                           seed=seed, fixed={"n_layer": 2})


def test_analyse_recovers_the_slopes():
    fit = lr_transfer.analyse(synthetic_runs({"mup": 0.0, "sp": -1.0}))
    assert fit["grid_step_log2"] == pytest.approx(1.0)
    assert fit["parametrizations"]["mup"]["slope"] == pytest.approx(0.0, abs=1e-9)
    assert fit["parametrizations"]["sp"]["slope"] == pytest.approx(-1.0, abs=1e-9)
    sp = fit["parametrizations"]["sp"]
    assert sp["widths"] == [32, 64, 128]
    assert sp["best_lr"] == pytest.approx([4e-3, 2e-3, 1e-3])
    assert sp["spread_grid_steps"] == pytest.approx(2.0)
    assert sp["at_grid_edge"] == [False, False, True]  # 1e-3 is the grid's lowest lr
    assert fit["parametrizations"]["mup"]["spread_grid_steps"] == pytest.approx(0.0, abs=1e-9)


def test_analyse_with_noise_keeps_the_sign():
    fit = lr_transfer.analyse(synthetic_runs({"mup": 0.0, "sp": -0.7}, noise=0.003))
    assert abs(fit["parametrizations"]["mup"]["slope"]) < 0.15
    assert fit["parametrizations"]["sp"]["slope"] < -0.5


def test_transfer_verdict_on_a_transferring_and_a_drifting_case():
    # eta* moves by 0.8 grid steps under "mup" (transfers), by 1.2 under "sp" (drifts), both
    # with eta* inside the grid at every width, over a 4x width range
    fit = lr_transfer.analyse(synthetic_runs({"mup": -0.4, "sp": -0.6}))
    mup, sp = fit["parametrizations"]["mup"], fit["parametrizations"]["sp"]
    assert mup["width_range"] == sp["width_range"] == 4.0
    assert not any(mup["at_grid_edge"]) and not any(sp["at_grid_edge"])
    assert mup["spread_grid_steps"] == pytest.approx(0.8, abs=1e-9)
    assert sp["spread_grid_steps"] == pytest.approx(1.2, abs=1e-9)
    assert mup["transfers"] is True and sp["transfers"] is False
    flat = lr_transfer.analyse(synthetic_runs({"mup": 0.0, "sp": -1.0}))["parametrizations"]
    assert flat["mup"]["transfers"] is True
    assert flat["sp"]["transfers"] is False  # two grid steps, and at the grid's edge


def test_transfer_needs_a_4x_width_range_and_an_optimum_inside_the_grid():
    narrow = lr_transfer.analyse(synthetic_runs({"mup": 0.0}, widths=(32, 64)))
    assert narrow["parametrizations"]["mup"]["width_range"] == 2.0
    assert narrow["parametrizations"]["mup"]["transfers"] is False
    verdict = lr_transfer.transfer_verdict
    assert verdict([64, 256], [4e-3, 8e-3], [False, False], 1.0) == {"transfers": True,
                                                                     "width_range": 4.0}
    assert not verdict([64, 256], [4e-3, 8.1e-3], [False, False], 1.0)["transfers"]
    assert not verdict([64, 256], [4e-3, 4e-3], [False, True], 1.0)["transfers"]  # edge
    assert not verdict([64, 256], [4e-3, float("nan")], [False, True], 1.0)["transfers"]
    assert verdict([64, 256], [4e-3, 8e-3], [False, False], 0.5)["transfers"] is False


def test_seed_mean_skips_diverged_seeds():
    runs = synthetic_runs({"mup": 0.0})
    one = (runs["lr"] == 6.4e-2) & (runs["width"] == 32)
    runs.loc[one & (runs["seed"] == 0), ["loss", "diverged"]] = [float("nan"), True]
    everything = (runs["lr"] == 3.2e-2) & (runs["width"] == 32)
    runs.loc[everything, "diverged"] = True
    points = lr_transfer.mean_over_seeds(runs).set_index(["parametrization", "width", "lr"])
    assert points.loc[("mup", 32, 6.4e-2), "seeds"] == 1
    assert not points.loc[("mup", 32, 6.4e-2), "diverged"]
    assert points.loc[("mup", 32, 3.2e-2), "diverged"]


def test_is_diverged():
    assert lr_transfer.is_diverged(float("nan"), 1024)
    assert lr_transfer.is_diverged(float("inf"), 1024)
    assert lr_transfer.is_diverged(7.0, 1024)  # ln 1024 = 6.93: worse than a uniform guess
    assert not lr_transfer.is_diverged(6.5, 1024)


def test_cli_writes_fit_table_and_figure(tmp_path):
    runs = synthetic_runs({"mup": 0.0, "sp": -1.0})
    fit, rows, png = sweep_fit("lr-transfer", tmp_path, runs)
    assert fit["parametrizations"]["sp"]["slope"] == pytest.approx(-1.0, abs=1e-9)
    assert rows == len(runs)
    assert png == b"\x89PNG\r\n\x1a\n"


# -- the workflow ----------------------------------------------------------------------------------
TINY_PHASE = """
lr_transfer:
  enabled: true
  widths: [32, 64]
  n_layer: 1
  lrs: [4.0e-3, 8.0e-3, 1.6e-2]
  tokens: 8192
"""




def test_dry_run_plans_two_jobs_per_run_and_one_fit(tmp_path):
    counts, cfg = sweep_dry_run(tmp_path, "results/figures/lr_transfer.png", FULL)
    runs = len(lr_transfer.plan(cfg))
    assert runs == 2 * 3 * 5  # the default grid: {sp, muP} x 3 widths x 5 LRs
    assert counts["write_spec"] == runs + 1  # and the corpus spec
    assert counts["train_stable_lr_transfer"] == runs
    # config.yaml's resources.branch_jobs: series, one job per series (a run has one branch)
    assert sum(n for rule, n in counts.items()
               if rule.startswith("decay_branches_lr_transfer_")) == runs
    assert counts["fit_lr_transfer"] == 1
    # only what it needs
    assert "train_stable_isoflop" not in counts and "coord_check" not in counts


def test_disabled_phase_plans_no_training(tmp_path):
    off = tmp_path / "off.yaml"
    off.write_text("lr_transfer:\n  enabled: false\n")
    result = snakemake(tmp_path, "-n", "--cores", "2", "--quiet", "rules", "--configfile",
                       str(off))
    assert result.returncode == 0, result.stderr + result.stdout
    counts = job_counts(result.stdout + result.stderr)
    assert "train_stable_lr_transfer" not in counts and "fit_lr_transfer" not in counts
    assert counts["coord_check"] == 1


@pytest.mark.slow
def test_tiny_phase_end_to_end(tmp_path):
    fit = sweep_end_to_end(tmp_path, "lr_transfer", TINY_PHASE)
    assert set(fit["parametrizations"]) == {"sp", "mup"}
    for res in fit["parametrizations"].values():
        assert res["widths"] == [32, 64]
        assert all(1e-3 < lr < 5e-2 for lr in res["best_lr"])
        assert math.isfinite(res["slope"])
    runs = pd.read_csv(tmp_path / "results" / "muP" / "lr_transfer_runs.csv")
    assert len(runs) == 2 * 2 * 3 and runs["loss"].between(0.5, 7.0).all()
