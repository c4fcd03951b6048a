"""The learning-rate transfer phase: does the best LR stay put as the model widens?

muP's promise (Tensor Programs V, arXiv:2203.03466; used by Cerebras-GPT, arXiv:2304.03208, and
MiniCPM, arXiv:2404.06395) is that the LR tuned on a narrow proxy is still optimal when the model
is wider. This phase measures it: widths x a log2-spaced LR grid x parametrizations x seeds, every
run trained on the same number of tokens, one depth. The best LR per width, eta*, comes from a
parabola in log2 LR through the grid minimum and its two neighbours; the slope of log eta* against
log width is ~0 when the LR transfers and negative under SP (where hidden updates grow with
width, so the best LR must shrink, roughly like 1/width for Adam).

Its run table, specs and analysis are the shared ones of `scalinglab.phases.lr_sweep` (the
depth-transfer phase uses them too) along the width axis. Every run's id is canonical, built
here, never in Snakemake: `lrt-<p>-l<layers>-d<width>-h<heads>-lr<lr>-b<batch>-s<seed>_D<tokens>`,
e.g. `lrt-mup-l2-d64-h2-lr4e-03-b16-s0_D262144`.

The `lr_transfer` section itself is `scalinglab.config.lr_transfer.LrTransferConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from scalinglab.config import SizeConfig
from scalinglab.phases import lr_sweep
from scalinglab.phases.base import Phase
from scalinglab.phases.lr_sweep import (  # noqa: F401 (the analysis, named here as before)
    MAX_SPREAD_GRID_STEPS,
    MIN_RANGE,
    best_lr,
    is_diverged,
    mean_over_seeds,
    slope,
    transfer_verdict,
)
from scalinglab.training.spec import RunSpec

PHASE = "lr_transfer"
SERIES_PREFIX = "lrt"
MIN_WIDTH_RANGE = MIN_RANGE  # the target: eta* within one grid step over >= 4x in width
AXIS = lr_sweep.WIDTH


def check_config(cfg) -> None:
    """Checks of the `lr_transfer` section against the rest of the study config."""
    lt = cfg.lr_transfer
    if not lt.enabled or "mup" not in lt.parametrizations:
        return
    for i, width in enumerate(lt.widths):
        lr_sweep.check_width(cfg, width, f"lr_transfer.widths[{i}]")


def plan(cfg) -> pd.DataFrame:
    """One row per run (`lr_sweep.plan_rows`). Empty when the phase is off."""
    check_config(cfg)
    lt = cfg.lr_transfer
    return lr_sweep.plan_rows(cfg, PHASE, SERIES_PREFIX, [
        (p, SizeConfig(lt.n_layer, width, lt.n_head))
        for p in lt.parametrizations for width in lt.widths])


def series_spec(cfg, table: pd.DataFrame, sid: str) -> RunSpec:
    """The spec file of one run, in the format `train.train_stable` / `decay_branch` read."""
    return lr_sweep.series_spec(cfg, table, sid, PHASE)


def read_runs(run_jsons) -> pd.DataFrame:
    """One row per finished decay branch: parametrization, width, lr, seed, loss, diverged."""
    return lr_sweep.read_runs(run_jsons, lr_sweep.WIDTH, "lr-transfer")


def analyse(runs: pd.DataFrame) -> dict:
    """The content of `results/fits/lr_transfer.json` from `read_runs`' table."""
    return lr_sweep.analyse(runs, lr_sweep.WIDTH)


# -- the phase, on the shared abstraction (scalinglab.phases.base) ----------------------------
@dataclass(frozen=True)
class LrTransfer(lr_sweep.SweepPhase):
    name: str = PHASE
    section: str = "lr_transfer"
    files: tuple[str, ...] = ("results/muP/lr_transfer_plan.csv", "results/fits/lr_transfer.json",
                              "results/figures/lr_transfer.png")

    def plan(self, cfg):
        return plan(cfg)

    def series_spec(self, cfg, table, sid):
        return series_spec(cfg, table, sid)


@dataclass(frozen=True)
class CoordCheck(Phase):
    name: str = "coord_check"

    def targets(self, cfg):
        return ["results/muP/coord_check.csv", "results/muP/coord_check.json",
                "results/figures/coord_check.png"]
