"""Figures of the hyperparameter, schedule and recipe phases, drawn from their fit JSON and tables.

hparams.png (DeepSeek LLM, arXiv:2401.02954, Fig. 3), critical_batch.png (MiniCPM,
arXiv:2404.06395, Fig. 3), wsd_vs_cosine.png (Hägele et al., arXiv:2405.18392, Fig. 3) and
prediction.png. Saved atomically like every other figure.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # no display on the machines that run the workflow

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from scalinglab import atomic  # noqa: E402


def _save(fig, out) -> None:
    fig.tight_layout()
    atomic.write_with(out, lambda tmp: fig.savefig(tmp, dpi=130, format="png"))
    plt.close(fig)


def _log(ax, x: bool = True, y: bool = True) -> None:
    """Log axes, called once the data are drawn: on a range of under 2 decades ticks at 1, 2
    and 5 x 10^k (powers of ten alone are too few; over a wider range those three collide in a
    narrow panel), and never minor tick labels (they collide)."""
    for on, axis, scale in ((x, ax.xaxis, ax.set_xscale), (y, ax.yaxis, ax.set_yscale)):
        if not on:
            continue
        scale("log")
        low, high = axis.get_data_interval()
        if 0 < low and high / low < 3:  # a fraction of a decade: plain numbers, evenly spaced
            axis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=5))
            axis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        elif 0 < low and high / low < 100:
            axis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(matplotlib.ticker.LogFormatterSciNotation(
                labelOnlyBase=False, minor_thresholds=(np.inf, np.inf)))
        axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _law_line(ax, law: dict, x_lo: float, x_hi: float, color, label: str) -> None:
    """The fitted power law from x_lo to x_hi with its bootstrap 95% band."""
    if "error" in law:
        return
    x = np.geomspace(x_lo, x_hi, 100)
    ax.plot(x, law["coef"] * x ** law["exponent"], color=color, lw=1.6, label=label)
    if law.get("samples"):
        s = np.asarray(law["samples"], float)
        ys = s[:, :1] * x[None, :] ** s[:, 1:2]
        low, high = np.percentile(ys, [2.5, 97.5], axis=0)
        ax.fill_between(x, low, high, color=color, alpha=0.15, lw=0)


def hparams_figure(fit: dict, out, target: float) -> None:
    """Near-optimal (coloured) and other (grey) runs in the (C, lr) and (C, batch) planes, and
    against N; the fitted laws extended to the target compute, as in DeepSeek LLM's Fig. 3."""
    sns.set_theme(style="whitegrid", context="notebook")
    points = pd.DataFrame(fit["points"])
    near = points[points["near_optimal"]]
    other = points[~points["near_optimal"] & ~points["diverged"]]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    panels = (("lr_vs_C", "C", "lr"), ("batch_vs_C", "C", "batch_tokens"),
              ("lr_vs_N", "N", "lr"), ("batch_vs_N", "N", "batch_tokens"))
    n_target = None
    if "error" not in fit["laws"]["batch_vs_N"] and "error" not in fit["laws"]["lr_vs_N"]:
        # N of the target by the budgets' own N(C): a line through the sweep's (C, N) pairs
        budgets = pd.DataFrame(fit["budgets"])
        if budgets["N"].nunique() > 1:
            slope, icpt = np.polyfit(np.log(budgets["C"]), np.log(budgets["N"]), 1)
            n_target = float(np.exp(icpt + slope * np.log(target)))
    for ax, (name, x_col, y_col) in zip(axes.flat, panels, strict=True):
        ax.scatter(other[x_col], other[y_col], color="0.6", s=18, label="other runs", zorder=2)
        sc = ax.scatter(near[x_col], near[y_col], c=near["loss"], cmap="viridis_r", s=46,
                        edgecolor="k", lw=0.5, label="near-optimal runs", zorder=3)
        hi = target if x_col == "C" else (n_target or points[x_col].max())
        law = fit["laws"][name]
        label = ("no fit: " + law["error"]) if "error" in law else \
            f"fit: {law['coef']:.3g} {x_col}^{law['exponent']:+.3f}"
        _law_line(ax, law, points[x_col].min(), hi, "C3", label)
        if x_col == "C":
            ax.axvline(target, color="k", ls=":", lw=1)
        _log(ax)
        ax.set_xlabel("compute C (FLOPs)" if x_col == "C" else "non-embedding parameters N")
        ax.set_ylabel("learning rate" if y_col == "lr" else "batch size (tokens)")
        ax.legend(fontsize=8, loc="best")
        fig.colorbar(sc, ax=ax, label="final loss", pad=0.01)
    fig.suptitle(f"Hyperparameter laws: runs within {100 * fit['near_optimal']:g}% of their "
                 f"budget's best loss (dotted: target C = {target:.2g})", fontsize=11)
    _save(fig, out)


def _loss_by_tokens(ax, ylabel: str, title: str) -> None:
    """Finish a panel of loss curves against training tokens: tokens on a log axis, the loss on
    a linear one, the labels, a small title and the legend."""
    _label(ax, "training tokens", ylabel, title, size=10)


def critical_batch_figure(curves: pd.DataFrame, fit: dict, out) -> None:
    """Left: loss against tokens per batch size, the target losses and the best batch's crossing.
    Right: B_opt against L with the fit bs = k / L^gamma."""
    sns.set_theme(style="whitegrid", context="notebook")
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    batches = sorted(curves["batch_tokens"].unique())
    colors = dict(zip(batches, sns.color_palette("viridis", len(batches)), strict=True))
    for b, run in curves.groupby("batch_tokens"):
        left.plot(run["tokens"], np.minimum.accumulate(run["loss"]), color=colors[b],
                  label=f"B = {b} tokens")
    for level in fit["levels"]:
        left.axhline(level["loss"], color="0.75", lw=0.8, zorder=0)
        tokens = {int(k): v for k, v in level["tokens"].items()}
        if level["n_reached"] >= 2:
            grid = int(level["grid_B"])
            if tokens.get(grid) is not None and math.isfinite(tokens[grid]):
                left.scatter([tokens[grid]], [level["loss"]], marker="*", s=120,
                             color=colors[grid], edgecolor="k", zorder=4)
    _loss_by_tokens(left, "validation loss (running minimum)",
                    f"Same {fit['steps_budget']} steps per batch size (star: fewest tokens)")
    usable = [lv for lv in fit["levels"] if lv["n_reached"] >= 2]
    losses = np.array([lv["loss"] for lv in usable])
    b_opt = np.array([lv["B_opt"] for lv in usable])
    edge = np.array([lv["limited_by"] == "grid" for lv in usable], bool)
    right.scatter(losses[~edge], b_opt[~edge], color="C0", s=40, label="B_opt")
    right.scatter(losses[edge], b_opt[edge], facecolor="none", edgecolor="C0", s=40,
                  label="B_opt at an end of the grid")
    crit = np.array([lv.get("B_crit", np.nan) for lv in usable], float)
    right.scatter(losses, crit, marker="x", color="C2", label="B_crit = E_min/S_min")
    law = fit["law"]
    if "error" not in law and len(losses):
        x = np.geomspace(losses.min(), losses.max(), 50)
        right.plot(x, law["k"] * x ** -law["gamma"], color="C3",
                   label=f"B_opt = {law['k']:.3g} / L^{law['gamma']:.2f}")
    _log(right)
    right.set_xlabel("target loss L")
    right.set_ylabel("batch size (tokens)")
    right.legend(fontsize=8)
    fig.suptitle("Optimal batch size against loss", fontsize=11)
    _save(fig, out)


def wsd_vs_cosine_figure(finals: pd.DataFrame, curves: pd.DataFrame, fit: dict, out) -> None:
    """Top: loss against tokens per size (WSD stable run and main branches; cosine runs).
    Middle: every WSD variant's final loss relative to the cosine run of the same budget. Both
    at each schedule's grid-best LR per budget (`grid_best`, a column of `finals`). Bottom, when
    tuned over an LR grid: final loss against LR per budget for both schedules."""
    sns.set_theme(style="whitegrid", context="notebook")
    sizes = finals[["n_layer", "n_embd", "n_head", "N"]].drop_duplicates().sort_values("N")
    tuned = "tuned_per_budget" in fit
    rows = 3 if tuned else 2
    fig, axes = plt.subplots(rows, len(sizes), figsize=(5.6 * len(sizes), 4.25 * rows),
                             squeeze=False)
    every, finals = finals, finals[finals["grid_best"]]
    main = fit["main"]
    budgets = sorted(finals["C"].unique())
    colors = dict(zip(budgets, sns.color_palette("viridis", len(budgets)), strict=True))
    for j, size in enumerate(sizes.itertuples()):
        top, bottom = axes[0][j], axes[1][j]
        mine = finals[(finals["n_embd"] == size.n_embd) & (finals["n_layer"] == size.n_layer)]
        by_id = curves.set_index("run_id") if not curves.empty else None
        for row in mine.itertuples():
            if by_id is None or row.run_id not in by_id.index:
                continue
            curve = curves[curves["run_id"] == row.run_id]
            if row.kind == "cosine":
                top.plot(curve["D"], curve["loss"], color=colors[row.C], ls="--", lw=1.2)
            elif row.main:
                top.plot(curve["D"], curve["loss"], color=colors[row.C], lw=1.6)
        stable = curves[(curves["kind"] == "stable")
                        & curves["series_id"].isin(mine[mine["kind"] == "wsd"]["series_id"])]
        for _, run in stable.groupby("series_id"):
            top.plot(run["D"], run["loss"], color="0.3", lw=1.0)
        top.plot([], [], color="0.3", lw=1.0, label="WSD stable run")
        top.plot([], [], color="0.5", lw=1.6, label=f"WSD decay ({main['decay_shape']}, "
                 f"{main['decay_fraction']:g})")
        top.plot([], [], color="0.5", ls="--", label="cosine, one run per budget")
        _loss_by_tokens(top, "validation loss",
                        f"l{size.n_layer}-d{size.n_embd}-h{size.n_head} (N = {size.N:,})")
        cos = mine[mine["kind"] == "cosine"].set_index("C")["loss"]
        for (fraction, shape), rows in mine[mine["kind"] == "wsd"].groupby(
                ["decay_fraction", "decay_shape"]):
            gap = 100 * (rows["loss"].to_numpy() / cos.loc[rows["C"]].to_numpy() - 1)
            is_main = math.isclose(fraction, main["decay_fraction"]) \
                and shape == main["decay_shape"]
            bottom.plot(rows["C"], gap, marker="o", lw=2.2 if is_main else 1.0,
                        ls="-" if shape == main["decay_shape"] else ":",
                        label=f"{shape}, decay {fraction:g}")
        bottom.axhline(0, color="k", lw=0.8)
        _log(bottom, y=False)
        bottom.set_xlabel("compute C (FLOPs)")
        bottom.set_ylabel("WSD loss vs cosine (%)")
        bottom.legend(fontsize=7)
        if tuned:
            _loss_vs_lr(axes[2][j], every, size, fit, colors)
    fig.suptitle(f"WSD vs cosine: compute_saving_ratio = {fit['compute_saving_ratio']:.2f}, "
                 f"mean final-loss gap {100 * fit['mean_gap_rel']:+.2f}%", fontsize=11)
    _save(fig, out)


def _loss_vs_lr(ax, finals: pd.DataFrame, size, fit: dict, colors: dict) -> None:
    """Final loss against peak LR per budget: cosine runs dashed, main WSD branches solid, each
    schedule's tuned optimum (`tuned_per_budget`: refined LR, parabola minimum) a marker."""
    main = fit["main"]
    mine = finals[(finals["n_embd"] == size.n_embd) & (finals["n_layer"] == size.n_layer)]
    cos = mine[mine["kind"] == "cosine"]
    wsd = mine[(mine["kind"] == "wsd") & np.isclose(mine["decay_fraction"], main["decay_fraction"])
               & (mine["decay_shape"] == main["decay_shape"])]
    for budget, color in colors.items():
        for rows, ls in ((wsd, "-"), (cos, "--")):
            at = rows[rows["C"] == budget].sort_values("lr")
            ax.plot(at["lr"], at["loss"], color=color, ls=ls, marker="o", ms=3)
        ax.plot([], [], color=color, label=f"C = {budget:.2g}")
    for pair in fit["tuned_per_budget"]:
        if pair["N"] != size.N:
            continue
        for side, marker in (("wsd", "*"), ("cosine", "X")):
            ax.scatter(pair[f"best_lr_{side}"], pair[f"fit_loss_{side}"], marker=marker, s=90,
                       color=colors[pair["C"]], edgecolor="k", zorder=3)
    ax.plot([], [], color="0.5", label="WSD (* its optimum)")
    ax.plot([], [], color="0.5", ls="--", label="cosine (X its optimum)")
    _label(ax, "peak learning rate", "final validation loss",
           f"ratio of best LRs, WSD / cosine: {fit['lr_ratio_wsd_over_cosine']:.2f}", size=9)


def _label(ax, xlabel: str, ylabel: str, title: str, size: int) -> None:
    """A log x axis, the labels, a title of font `size` and a legend two points smaller."""
    _log(ax, y=False)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=size)
    ax.legend(fontsize=size - 2)


def prediction_figure(fit: dict, recipe: dict, result: dict, out) -> None:
    """The IsoFLOP runs, the per-budget optima the loss law was fitted on, the law extended to
    the target compute with its 95% band, the prediction and the validation run's loss."""
    sns.set_theme(style="whitegrid", context="notebook")
    points = pd.DataFrame(fit["points"])
    budgets = pd.DataFrame(fit["budgets"])
    target = float(recipe["compute"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    c = np.geomspace(min(points["C"].min(), budgets["C"].min()) / 1.3, target * 1.3, 100)
    s = np.asarray(fit["bootstrap"]["samples"], float).reshape(-1, 6)
    for ax, (coef, exp, i_coef, i_exp), y_pts, y_opt, label in (
            (left, ("k_L", "e_L", 4, 5), points["loss"], budgets["loss_opt"], "validation loss"),
            (right, ("k_n", "a", 0, 1), points["N"], budgets["N_opt"], "N (non-embedding)")):
        ax.scatter(points["C"], y_pts, color="0.65", s=16, label="IsoFLOP runs")
        ax.scatter(budgets["C"], y_opt, color="C0", s=60, edgecolor="k", zorder=3,
                   label="per-budget optimum (fitted on)")
        ax.plot(c, fit[coef] * c ** fit[exp], color="C0", lw=1.5,
                label=f"{fit[coef]:.3g} C^{fit[exp]:.3f}")
        if len(s):
            band = np.percentile(s[:, i_coef:i_coef + 1] * c[None, :] ** s[:, i_exp:i_exp + 1],
                                 [2.5, 97.5], axis=0)
            ax.fill_between(c, band[0], band[1], color="C0", alpha=0.15, lw=0)
        _log(ax, y=ax is right)  # losses span a few percent: a linear axis reads better
        ax.set_xlabel("compute C (FLOPs)")
        ax.set_ylabel(label)
    lo, hi = result["predicted_loss_ci"]
    pred = result["predicted_loss"]
    # max(0, .): a degenerate interval (every replicate equal) may round below the point
    left.errorbar([target], [pred], yerr=[[max(0.0, pred - lo)], [max(0.0, hi - pred)]],
                  fmt="s", color="C3", capsize=4,
                  label=f"predicted {pred:.3f} [{lo:.3f}, {hi:.3f}]")
    if "predicted_loss_range" in result:  # one run's range: the law's form error and noise too
        r_lo, r_hi = result["predicted_loss_range"]
        left.errorbar([target * 1.08], [pred], yerr=[[pred - r_lo], [r_hi - pred]], fmt="none",
                      color="C3", alpha=0.5, capsize=6, lw=1,
                      label=f"range for one run [{r_lo:.3f}, {r_hi:.3f}]")
    left.scatter([target], [result["actual_loss"]], marker="*", s=160, color="C1",
                 edgecolor="k", zorder=4,
                 label=f"actual {result['actual_loss']:.3f} "
                       f"({100 * result['relative_error']:+.2f}%)")
    n_lo, n_hi = recipe["N_ci"]
    right.errorbar([target], [recipe["N"]],
                   yerr=[[max(0.0, recipe["N"] - n_lo)], [max(0.0, n_hi - recipe["N"])]],
                   fmt="s", color="C3", capsize=4, label=f"recipe N_opt {recipe['N']:.3g}")
    shape = result["shape"]
    right.scatter([target], [result["N"]], marker="*", s=160, color="C1", edgecolor="k",
                  zorder=4, label=f"run l{shape['n_layer']}-d{shape['n_embd']}-"
                                  f"h{shape['n_head']}: N {result['N']:,}")
    tpp = fit["tokens_per_param"]
    lines = [f"D/N at C = {c}: {v:.0f}" for c, v in tpp["per_budget"].items()]
    lines.append(f"recipe at {target:.2g}: {recipe['tokens_per_param']:.0f}")
    lines += [f"{p['name']}: ~{p['tokens_per_param']:g}" for p in tpp["published"]]
    right.text(0.02, 0.98, "\n".join(lines), transform=right.transAxes, va="top", fontsize=7.5,
               bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.8"})
    for ax in (left, right):
        ax.legend(fontsize=8)
    fig.suptitle(f"Prediction at {target:.3g} FLOPs ({recipe['extrapolation']:.1f}x the largest "
                 f"fitted budget)", fontsize=11)
    _save(fig, out)
