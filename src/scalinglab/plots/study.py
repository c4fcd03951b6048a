"""The study's figures, each drawn from the tables and fits the workflow wrote (never from logs).

Figures are saved atomically, so a failed plot never leaves a half-written PNG behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on the machines that run the workflow

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from scalinglab import atomic  # noqa: E402
from scalinglab.errors import UserError  # noqa: E402


def _read_csv(path: str | None, what: str) -> pd.DataFrame:
    if not path:
        raise UserError(f"--{what} is required for this figure")
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: empty file") from None


def _read_fit(path: str | None) -> dict:
    if not path:
        raise UserError("--fit is required for this figure")
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None


def _save(fig, out: str) -> None:
    fig.tight_layout()
    atomic.write_with(out, lambda tmp: fig.savefig(tmp, dpi=130, format="png"))
    plt.close(fig)


def _size_palette(values) -> dict:
    values = sorted(set(values))
    return dict(zip(values, sns.color_palette("viridis", len(values)), strict=True))


def loss_curves(curves: pd.DataFrame, out: str) -> None:
    """Validation loss against tokens: stable runs solid, decay branches dashed."""
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(8, 5.5))
    colors = _size_palette(curves["N"])
    for (_series, kind, _label), run in curves.groupby(["series_id", "kind", "label"]):
        run = run.sort_values("D")
        color = colors[run["N"].iloc[0]]
        if kind == "stable":
            ax.plot(run["D"], run["loss"], color=color, lw=1.6,
                    label=f"N={run['N'].iloc[0]:,}")
        else:
            ax.plot(run["D"], run["loss"], color=color, lw=1.1, ls="--")
            ax.plot(run["D"].iloc[-1], run["loss"].iloc[-1], "o", color=color, ms=4)
    ax.set_xscale("log")
    ax.set_xlabel("training tokens D")
    ax.set_ylabel("validation loss")
    ax.set_title("Stable runs (solid) and WSD decay branches (dashed)")
    ax.legend(title="non-embedding params", fontsize=8)
    _save(fig, out)


def isoflop(runs: pd.DataFrame, fit: dict, out: str) -> None:
    """Loss against N for each budget, with the fitted parabolas in log N and their minima.
    Failed runs (diverged, or without a finite loss) are crosses along the top of the panel,
    left out of the parabola as they are out of the fit."""
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(8, 5.5))
    budgets = sorted(runs["C"].unique())
    palette = dict(zip(budgets, sns.color_palette("rocket_r", len(budgets)), strict=True))
    optima = {b["C"]: b for b in fit.get("budgets", [])}
    loss = runs["loss"].to_numpy(float)
    failed = ~np.isfinite(loss)
    if "diverged" in runs.columns:
        failed |= runs["diverged"].astype(str).str.lower().isin(("true", "1")).to_numpy()
    top = float(np.max(loss[~failed])) if (~failed).any() else 1.0
    for budget in budgets:
        at = (runs["C"] == budget).to_numpy()
        group = runs[at & ~failed].sort_values("N")
        color = palette[budget]
        ax.plot(group["N"], group["loss"], "o", color=color, label=f"C={budget:.2g}")
        if (at & failed).any():
            ax.plot(runs["N"][at & failed], np.full(int((at & failed).sum()), top), "x",
                    color=color, ms=8, mew=2)
        best = _closest(optima, budget)
        if best is None or len(group) < 3:
            continue
        # the same least-squares parabola in log N that fitting.isoflop fits per budget
        coeffs = np.polyfit(np.log(group["N"].to_numpy(float)), group["loss"].to_numpy(float), 2)
        grid = np.linspace(np.log(group["N"].min()), np.log(group["N"].max()), 100)
        ax.plot(np.exp(grid), np.polyval(coeffs, grid), "-", color=color, lw=1.2)
        ax.plot(best["N_opt"], best["loss_opt"], "*", color=color, ms=14, mec="black")
    ax.set_xscale("log")
    ax.set_xlabel("non-embedding parameters N")
    ax.set_ylabel("final validation loss")
    title = f"IsoFLOP profiles (a = {fit.get('a', float('nan')):.3f})"
    ax.set_title(title + (f"; x: {int(failed.sum())} failed run(s)" if failed.any() else ""))
    ax.legend(fontsize=8)
    _save(fig, out)


def _closest(optima: dict, budget: float) -> dict | None:
    for c, row in optima.items():
        if np.isclose(c, budget, rtol=1e-9):
            return row
    return None


def compute_optimal(fit: dict, out: str) -> None:
    """N_opt(C) and D_opt(C): the per-budget minima and the fitted power laws."""
    sns.set_theme(style="whitegrid", context="notebook")
    budgets = pd.DataFrame(fit.get("budgets", []))
    if budgets.empty:
        raise UserError("the fit has no usable budget: nothing to draw")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    grid = np.geomspace(budgets["C"].min() / 2, budgets["C"].max() * 2, 50)
    ci = fit.get("ci", {})
    for ax, column, coef, exp, name in (
        (axes[0], "N_opt", "k_n", "a", "N"),
        (axes[1], "D_opt", "k_d", "b", "D"),
    ):
        ax.plot(budgets["C"], budgets[column], "o", color="C0", label="IsoFLOP minima")
        interval = ci.get(exp)
        text = f"[{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""
        ax.plot(grid, fit[coef] * grid ** fit[exp], "-", color="C3",
                label=f"{name}_opt = {fit[coef]:.3g} C^{fit[exp]:.3f} {text}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # a two-decade range: minor labels would collide
            axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("compute C (FLOPs)")
        ax.set_ylabel(f"{column}")
        ax.legend(fontsize=8)
    tpp = fit.get("tokens_per_param")
    if tpp is not None:
        fig.suptitle(f"Compute-optimal sizing: {tpp:.1f} tokens per parameter")
    _save(fig, out)


def draw(figure: str, args) -> None:
    if figure == "loss-curves":
        loss_curves(_read_csv(args.curves, "curves"), args.out)
    elif figure == "isoflop":
        isoflop(_read_csv(args.runs, "runs"), _read_fit(args.fit), args.out)
    elif figure == "compute-optimal":
        compute_optimal(_read_fit(args.fit), args.out)
    else:  # argparse restricts the choices; this is a programming error
        raise ValueError(figure)


def downstream(fit: dict, out: str) -> None:
    """Downstream accuracy against final validation loss: the runs, the fitted sigmoid with its
    bootstrap 95% band, and the chance line (scalinglab.training.downstream)."""
    from scalinglab.training.downstream import sigmoid

    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(7.5, 5))
    loss = np.asarray(fit["points"]["loss"], float)
    acc = np.asarray(fit["points"]["accuracy"], float)
    span = max(float(np.ptp(loss)), 1e-3)
    grid = np.linspace(loss.min() - 0.3 * span, loss.max() + 0.3 * span, 200)
    samples = np.asarray(fit["bootstrap"]["samples"], float).reshape(-1, 3)
    if len(samples):
        curves = sigmoid(grid[None, :], fit["chance"], samples[:, :1], samples[:, 1:2],
                         samples[:, 2:3])
        band = np.percentile(curves, [2.5, 97.5], axis=0)
        ax.fill_between(grid, band[0], band[1], color="C0", alpha=0.15, lw=0,
                        label="bootstrap 95% band")
    ax.plot(grid, sigmoid(grid, fit["chance"], fit["top"], fit["k"], fit["L_mid"]), color="C0",
            lw=1.6, label=f"sigmoid: top {fit['top']:.3f}, k {fit['k']:.3g}, "
                          f"L_mid {fit['L_mid']:.3f}")
    ax.scatter(loss, acc, color="C1", edgecolor="k", s=36, zorder=3,
               label=f"decay branches ({fit['n_points']})")
    ax.axhline(fit["chance"], color="0.4", ls=":", lw=1.2, label=f"chance {fit['chance']:.3g}")
    ax.set_xlabel("final validation loss")
    ax.set_ylabel("downstream accuracy")
    ax.set_title("Accuracy on the held-out continuation task against loss")
    ax.legend(fontsize=8)
    _save(fig, out)
