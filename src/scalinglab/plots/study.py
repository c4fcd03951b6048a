"""The study's figures, each drawn from the tables and fits the workflow wrote (never from logs).

Figures are saved atomically, so a failed plot never leaves a half-written PNG behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on the machines that run the workflow

import matplotlib.lines  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from scalinglab import atomic  # noqa: E402
from scalinglab.errors import UserError  # noqa: E402
from scalinglab.readers import read_csv  # noqa: E402
from scalinglab.training.metrics import trained_rows  # noqa: E402


def _read_csv(path: str | None, what: str) -> pd.DataFrame:
    if not path:
        raise UserError(f"--{what} is required for this figure")
    return read_csv(path)


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


ROUND_MARKERS = ("o", "s", "D", "^", "v")


def _failed(runs: pd.DataFrame) -> np.ndarray:
    failed = ~np.isfinite(runs["loss"].to_numpy(float))
    if "diverged" in runs.columns:
        failed |= runs["diverged"].astype(str).str.lower().isin(("true", "1")).to_numpy()
    return failed


def isoflop(runs: pd.DataFrame, fit: dict, out: str) -> None:
    """Loss against N for each budget: the points (seed repeats averaged; the marker says which
    round added them), the parabola drawn over its fit window only, its minimum (star; hollow
    when at an edge of the grid and left out of the laws) with the N_opt 95% interval as a bar.
    Failed runs (diverged, or without a finite loss) are crosses along the top of the panel."""
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(9, 6))
    predicted = runs.drop(trained_rows(runs).index)
    runs = trained_rows(runs)
    if len(predicted):
        ax.plot(predicted["N"], predicted["loss"], "+", color="0.45", ms=6, ls="none")
    points = pd.DataFrame(fit["points"]) if fit.get("points") else runs[~_failed(runs)]
    budgets = sorted(runs["C"].unique())
    palette = dict(zip(budgets, sns.color_palette("rocket_r", len(budgets)), strict=True))
    optima = {b["C"]: b for b in fit.get("budgets", [])}
    failed = _failed(runs)
    top = float(points["loss"].max()) if len(points) else 1.0
    rounds = sorted(points["round"].unique()) if "round" in points else [0]
    for budget in budgets:
        color = palette[budget]
        group = points[np.isclose(points["C"], budget, rtol=1e-9)].sort_values("N")
        best = _closest(optima, budget)
        window = set(best.get("window") or group["N"].round()) if best else set()
        for r in rounds:
            at = group[group["round"] == r] if "round" in group else group
            inside = at["N"].round().isin(window)
            marker = ROUND_MARKERS[int(r) % len(ROUND_MARKERS)]
            ax.plot(at["N"][inside], at["loss"][inside], marker, color=color, ms=5,
                    ls="none")
            ax.plot(at["N"][~inside], at["loss"][~inside], marker, color=color, ms=5,
                    ls="none", alpha=0.3)
        at_failed = np.isclose(runs["C"].to_numpy(float), budget, rtol=1e-9) & failed
        if at_failed.any():
            ax.plot(runs["N"][at_failed], np.full(int(at_failed.sum()), top), "x", color=color,
                    ms=8, mew=2)
        if best is None:
            continue
        fitted = group[group["N"].round().isin(window)]
        if len(fitted) >= 3:
            x = np.log(fitted["N"].to_numpy(float))
            coeffs = np.polyfit(x, fitted["loss"].to_numpy(float), 2)
            grid = np.linspace(x.min(), x.max(), 100)
            ax.plot(np.exp(grid), np.polyval(coeffs, grid), "-", color=color, lw=1.2)
        in_law = best.get("in_law", best.get("inside_range", True))
        if np.isfinite(best.get("N_opt") or np.nan) and np.isfinite(best.get("loss_opt") or np.nan):
            ci = best.get("N_opt_ci")
            if ci and in_law:
                ax.errorbar(best["N_opt"], best["loss_opt"],
                            xerr=[[best["N_opt"] - ci[0]], [ci[1] - best["N_opt"]]],
                            color=color, capsize=3, lw=1)
            ax.plot(best["N_opt"], best["loss_opt"], "*", ms=13, mec="black",
                    color=color if in_law else "none")
    ax.set_xscale("log")
    ax.set_xlabel("non-embedding parameters N")
    ax.set_ylabel("final validation loss (mean over seeds)")
    title = f"IsoFLOP profiles: {len(budgets)} budgets (a = {fit.get('a', float('nan')):.3f})"
    ax.set_title(title + (f"; x: {int(failed.sum())} failed run(s)" if failed.any() else ""))
    handles = [matplotlib.lines.Line2D([], [], color="0.3", marker=ROUND_MARKERS[int(r) % 5],
                                       ls="none", label=f"round {int(r)}") for r in rounds]
    handles += [matplotlib.lines.Line2D([], [], color="0.3", marker="o", ls="none", alpha=0.3,
                                        label="outside the fit window"),
                matplotlib.lines.Line2D([], [], color="0.3", marker="*", ms=10, mec="black",
                                        ls="none", label="minimum, 95% interval of N_opt"),
                matplotlib.lines.Line2D([], [], color="none", marker="*", ms=10, mec="black",
                                        ls="none", label="minimum at an edge (not in the laws)")]
    if len(predicted):
        handles.append(matplotlib.lines.Line2D([], [], color="0.45", marker="+", ls="none",
                                               label="predicted by the schedule law"))
    budget_legend = ax.legend(
        handles=[matplotlib.lines.Line2D([], [], color=palette[c], lw=2, label=f"C={c:.2g}")
                 for c in budgets], fontsize=7, ncol=2, loc="upper right", title="budget")
    ax.add_artist(budget_legend)
    ax.legend(handles=handles, fontsize=7, loc="lower left")
    _save(fig, out)


def _closest(optima: dict, budget: float) -> dict | None:
    for c, row in optima.items():
        if np.isclose(c, budget, rtol=1e-9):
            return row
    return None


def _law_line(ax, grid, values, band, color, label):
    ax.plot(grid, values, "-", color=color, label=label)
    if band:
        ok = [b is not None for b in band]
        lows = [b[0] for b, k in zip(band, ok, strict=True) if k]
        highs = [b[1] for b, k in zip(band, ok, strict=True) if k]
        ax.fill_between(np.asarray(grid)[ok], lows, highs, color=color, alpha=0.18, lw=0)


def compute_optimal(fit: dict, out: str) -> None:
    """N_opt(C) and D_opt(C): the per-budget minima with their intervals, Method 2's power laws
    and Method 3's compute-optimal curves, each with its 95% band where the fit has one."""
    sns.set_theme(style="whitegrid", context="notebook")
    budgets = pd.DataFrame(fit.get("budgets", []))
    if budgets.empty:
        raise UserError("the fit has no usable budget: nothing to draw")
    in_law = budgets["in_law"] if "in_law" in budgets else budgets.get(
        "inside_range", pd.Series(True, index=budgets.index))
    in_law = in_law.astype(bool)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    m2_band = fit.get("band") or {}
    grid = np.asarray(m2_band.get("C") or np.geomspace(budgets["C"].min() / 2,
                                                       budgets["C"].max() * 2, 50))
    ci = fit.get("ci") or {}
    m3 = fit.get("method3") or {}
    for ax, column, coef, exp, name in (
        (axes[0], "N_opt", "k_n", "a", "N"),
        (axes[1], "D_opt", "k_d", "b", "D"),
    ):
        law = budgets[in_law]
        if column == "N_opt" and "N_opt_ci" in law:
            err = np.array([[v - c[0], c[1] - v] if c else [0, 0]
                            for v, c in zip(law[column], law["N_opt_ci"], strict=True)]).T
            ax.errorbar(law["C"], law[column], yerr=err, fmt="o", color="C0", capsize=3,
                        label="IsoFLOP minima (95% interval)")
        else:
            ax.plot(law["C"], law[column], "o", color="C0", label="IsoFLOP minima")
        if (~in_law).any():
            ax.plot(budgets["C"][~in_law], budgets[column][~in_law], "o", mfc="none",
                    color="C0", label="minimum at an edge (not fitted)")
        interval = ci.get(exp)
        text = f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""
        _law_line(ax, grid, fit[coef] * grid ** fit[exp], m2_band.get(column), "C3",
                  f"Method 2: {name}_opt = {fit[coef]:.3g} C^{fit[exp]:.3f}{text}")
        for key, color in (("huber", "C2"), ("varpro", "C4")):
            entry = m3.get(key)
            if not entry or not entry.get("optima"):
                continue
            a_ci = (entry.get("ci") or {}).get("a")
            text = f" [{a_ci[0]:.3f}, {a_ci[1]:.3f}]" if a_ci else ""
            _law_line(ax, entry["optima"]["C"], entry["optima"][column],
                      (entry.get("band") or {}).get(column), color,
                      f"Method 3 ({key}): a = {entry['a']:.3f}{text}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # a two-decade range: minor labels would collide
            axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("compute C (FLOPs)")
        ax.set_ylabel(f"{column}")
        ax.legend(fontsize=7)
    tpp = fit.get("tokens_per_param")
    if tpp is not None:
        tpp_ci = ci.get("tokens_per_param")
        text = f" [{tpp_ci[0]:.1f}, {tpp_ci[1]:.1f}]" if tpp_ci else ""
        fig.suptitle(f"Compute-optimal sizing: {tpp:.1f}{text} tokens per parameter (Method 2)")
    _save(fig, out)


def draw(figure: str, args) -> None:
    if figure == "loss-curves":
        loss_curves(_read_csv(args.curves, "curves"), args.out)
    elif figure == "isoflop":
        fit = _read_fit(args.fit)
        isoflop(_read_csv(args.runs, "runs"), fit, args.out)
        if getattr(args, "words_out", None):
            atomic.write_text(args.words_out, interval_words(fit))
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


def interval_words(fit: dict) -> str:
    """Each budget's compute-optimal size and its 95% interval in words (reStructuredText, for
    the report's caption)."""
    lines = []
    for b in fit.get("budgets", []):
        head = f"- At C = {b['C']:.3g} FLOPs"
        if not b.get("in_law", True):
            lines.append(f"{head} the minimum was not located ({b.get('reason')}); this budget "
                         "is left out of the laws.")
            continue
        ci = b.get("N_opt_ci")
        span = (f", with 95% interval {ci[0]:,.0f} to {ci[1]:,.0f} (a factor "
                f"{ci[1] / ci[0]:.2f})" if ci else " (no interval)")
        lines.append(f"{head} the optimal size is {b['N_opt']:,.0f} parameters{span}, from "
                     f"{len(b.get('window', []))} sizes in its window.")
    return "\n".join(lines) + "\n"
