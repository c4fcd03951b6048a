"""WSD against cosine with each schedule's peak LR tuned per budget (`wsd_vs_cosine.lr_grid`).

Hägele et al. (arXiv:2405.18392, Sec. 3 and Fig. 4) find the best WSD LR about half the best
cosine LR, so a comparison at one shared LR favours whichever schedule that LR suits. Here each
schedule trains at every LR of the grid: the cosine side one run per (budget, LR), the WSD side one
stable run per LR with a decay branch per budget, so tuning WSD per budget costs one stable run per
LR. At each size and budget, each schedule's best LR is the grid minimum of its final losses,
refined by a parabola in log2 LR through that minimum and its two neighbours when it is interior
(`lr_transfer.best_lr`, the same estimate as the width-transfer phase's eta*); at an end of the
grid the grid point is kept and flagged, since the optimum may lie beyond it. The gap compares
measured losses, the grid minima: the parabola's minimum is an extrapolation that overshoots where
the loss is lopsided in log LR (one neighbour near divergence), by 0.09 nats in the measured study.

Keys added to the phase's fit JSON (next to those of `wsd_vs_cosine.analyse`, whose gaps then pair
the grid-best runs): `lr_grid`; `tuned_per_budget`, per size and budget `best_lr_wsd`,
`best_lr_cosine` (refined), `loss_wsd`, `loss_cosine` (the lowest measured final losses), `gap` =
(L_wsd - L_cos) / L_cos of those, `fit_loss_*` and `gap_fit` of the parabola minima,
`grid_best_lr_*`, `lr_ratio` and the `*_at_grid_edge` flags; `lr_ratio_wsd_over_cosine`, the
geometric mean of the per-budget ratios; `mean_gap` (of `gap`); and `compute`, the training FLOPs
of each side over the whole grid and their ratios.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from scalinglab.phases import wsd_vs_cosine
from scalinglab.phases.lr_transfer import best_lr

SIZE_KEYS = ["n_layer", "n_embd", "n_head"]


def analyse(finals: pd.DataFrame) -> dict:
    """`wsd_vs_cosine.analyse`, plus the tuned comparison when the runs span several LRs."""
    fit = wsd_vs_cosine.analyse(finals)
    if finals["lr"].nunique() > 1:
        fit.update(tuned(finals, fit["main"]["decay_fraction"], fit["main"]["decay_shape"]))
    return fit


def _grid_loss(rows: pd.DataFrame) -> float:
    finite = rows["loss"][np.isfinite(rows["loss"])]
    return float(finite.min()) if len(finite) else float("nan")


def tuned_pair(wsd: pd.DataFrame, cos: pd.DataFrame) -> dict:
    """The tuned pair of one size and budget from its WSD branches (main variant) and cosine
    runs, one row per LR each."""
    wsd, cos = wsd.sort_values("lr"), cos.sort_values("lr")
    w, c = best_lr(wsd["lr"], wsd["loss"]), best_lr(cos["lr"], cos["loss"])
    grid_w, grid_c = _grid_loss(wsd), _grid_loss(cos)
    first = wsd.iloc[0]
    return {
        "size": f"l{first.n_layer}-d{first.n_embd}-h{first.n_head}", "N": int(first.N),
        "C": float(first.C), "D": int(first.D),
        "best_lr_wsd": w["lr"], "best_lr_cosine": c["lr"],
        "loss_wsd": grid_w, "loss_cosine": grid_c, "gap": (grid_w - grid_c) / grid_c,
        "grid_best_lr_wsd": w["grid_lr"], "grid_best_lr_cosine": c["grid_lr"],
        "fit_loss_wsd": w["loss"], "fit_loss_cosine": c["loss"],
        "gap_fit": (w["loss"] - c["loss"]) / c["loss"],
        "lr_ratio": w["lr"] / c["lr"],
        "wsd_at_grid_edge": w["edge"], "cosine_at_grid_edge": c["edge"],
    }


def compute(finals: pd.DataFrame, fraction: float, shape: str) -> dict:
    """Training FLOPs of each side over the whole LR grid (the main WSD variant), their ratio,
    and what the WSD side would cost as independent runs (one per budget and LR)."""
    wsd = wsd_vs_cosine.variant_flops(finals, "wsd", fraction, shape)
    cosine = wsd_vs_cosine.variant_flops(finals, "cosine")
    main = finals[(finals["kind"] == "wsd") & finals["main"]]
    independent = float(main["C_actual"].sum())
    n_lrs = int(finals["lr"].nunique())
    return {"n_lrs": n_lrs, "wsd": wsd, "cosine": cosine, "cosine_over_wsd": cosine / wsd,
            "wsd_per_lr": wsd / n_lrs, "cosine_per_lr": cosine / n_lrs,
            "wsd_as_independent_runs": independent,
            "independent_over_wsd": independent / wsd}


def tuned(finals: pd.DataFrame, fraction: float, shape: str) -> dict:
    """The tuned keys of the fit JSON (see the module docstring)."""
    cos = finals[finals["kind"] == "cosine"]
    wsd = finals[(finals["kind"] == "wsd") & np.isclose(finals["decay_fraction"], fraction)
                 & (finals["decay_shape"] == shape)]
    pairs = []
    for key, rows in wsd.groupby([*SIZE_KEYS, "C"], sort=True):
        at = (cos[SIZE_KEYS + ["C"]] == pd.Series(key, index=[*SIZE_KEYS, "C"])).all(axis=1)
        pairs.append(tuned_pair(rows, cos[at]))
    pairs.sort(key=lambda p: (p["N"], p["C"]))
    ratios = [p["lr_ratio"] for p in pairs if math.isfinite(p["lr_ratio"])]
    gaps = [p["gap"] for p in pairs if math.isfinite(p["gap"])]
    return {
        "lr_grid": sorted(float(lr) for lr in finals["lr"].unique()),
        "tuned_per_budget": pairs,
        "lr_ratio_wsd_over_cosine": float(np.exp(np.mean(np.log(ratios)))) if ratios
        else float("nan"),
        # with a best LR at an end of the grid, the ratio and gap there are bounds, not estimates
        "any_at_grid_edge": any(p["wsd_at_grid_edge"] or p["cosine_at_grid_edge"]
                                for p in pairs),
        "mean_gap": float(np.mean(gaps)) if gaps else float("nan"),
        "compute": compute(finals, fraction, shape),
        "tuned_definition": "per size and budget, each schedule's best LR over lr_grid (grid "
                            "minimum, parabola in log2 LR when interior); gap = (L_wsd - L_cos) "
                            "/ L_cos of the lowest measured losses, gap_fit of the parabola "
                            "minima; compute.cosine_over_wsd = training FLOPs of "
                            "every cosine run / the WSD stable runs and main branches, over the "
                            "whole grid",
    }
