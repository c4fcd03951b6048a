"""The depth-transfer phase: does the best LR stay put as the model deepens?

Width-only muP (Tensor Programs V, arXiv:2203.03466) keeps a tuned LR optimal as the model
widens, not as it deepens; CompleteP (Dey et al., arXiv:2505.01618) adds depth rules (residual
branches x m_d^-alpha, ...; docs/completep.md) so that it does both. This phase measures it as
`lr_transfer` does for width: depths x a log2-spaced LR grid x {muP, CompleteP} x seeds at one
width, every run trained on the same number of tokens, through the same machinery
(`scalinglab.phases.lr_sweep`) along the depth axis. The fit gives per parametrization eta* per
depth (parabola in log2 LR), the slope of ln eta* against ln depth, the drift over the depth range
in grid steps, and `transfers`: eta* moves by at most one grid step over a >= 4x depth range.

Run ids: `dpt-<p>-l<layers>-d<width>-h<heads>-lr<lr>-b<batch>-s<seed>_D<tokens>`, e.g.
`dpt-completep-l8-d32-h2-lr1.3e-02-b16-s0_D262144`. The section is
`scalinglab.config.depth_transfer.DepthTransferConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from scalinglab.config import SizeConfig
from scalinglab.errors import UserError
from scalinglab.phases import lr_sweep
from scalinglab.training.spec import RunSpec

PHASE = "depth_transfer"
SERIES_PREFIX = "dpt"
AXIS = lr_sweep.DEPTH
TARGETS = ("results/muP/depth_transfer_plan.csv", "results/fits/depth_transfer.json",
           "results/figures/depth_transfer.png")


def check_config(cfg) -> None:
    """Checks of the `depth_transfer` section against the rest of the study config."""
    dt = cfg.depth_transfer
    if not dt.enabled:
        return
    # both parametrizations scale with width from base_width
    lr_sweep.check_width(cfg, dt.n_embd, "depth_transfer.n_embd")
    if "completep" not in dt.parametrizations:
        return
    base = cfg.parametrization.base_depth
    for i, depth in enumerate(dt.depths):
        if depth < base:
            raise UserError(f"parametrization.base_depth: {base} is larger than "
                            f"depth_transfer.depths[{i}] = {depth}; CompleteP scales up from "
                            f"the base depth (m_d = n_layer / base_depth >= 1)")


def plan(cfg) -> pd.DataFrame:
    """One row per run (`lr_sweep.plan_rows`). Empty when the phase is off."""
    check_config(cfg)
    dt = cfg.depth_transfer
    shapes = [(p, SizeConfig(depth, dt.n_embd, dt.n_head))
              for p in dt.parametrizations for depth in dt.depths]
    return lr_sweep.plan_rows(cfg, PHASE, SERIES_PREFIX, shapes)


def series_spec(cfg, table: pd.DataFrame, sid: str) -> RunSpec:
    return lr_sweep.series_spec(cfg, table, sid, PHASE)


def read_runs(run_jsons) -> pd.DataFrame:
    """One row per finished decay branch: parametrization, n_layer, lr, seed, loss, diverged."""
    return lr_sweep.read_runs(run_jsons, AXIS, "depth-transfer")


def mean_over_seeds(runs: pd.DataFrame) -> pd.DataFrame:
    return lr_sweep.mean_over_seeds(runs, AXIS)


def analyse(runs: pd.DataFrame) -> dict:
    """The content of `results/fits/depth_transfer.json` from `read_runs`' table."""
    fit = lr_sweep.analyse(runs, AXIS)
    widths = sorted(runs["width"].unique().tolist())
    return {"width": widths[0] if len(widths) == 1 else widths, **fit}


@dataclass(frozen=True)
class DepthTransfer(lr_sweep.SweepPhase):
    name: str = PHASE
    section: str = "depth_transfer"
    files: tuple[str, ...] = TARGETS

    def plan(self, cfg):
        return plan(cfg)

    def series_spec(self, cfg, table, sid):
        return series_spec(cfg, table, sid)
