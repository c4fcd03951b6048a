"""The muP figures: the coordinate check and the learning-rate transfer sweeps (width, depth).

Drawn from the tables the workflow wrote (coord_check.csv, the LR-transfer runs and fit), saved
atomically like every other figure.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # no display on the machines that run the workflow

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from scalinglab import atomic  # noqa: E402

NAMES = {"sp": "SP", "mup": "muP", "completep": "CompleteP"}


def _save(fig, out) -> None:
    fig.tight_layout()
    atomic.write_with(out, lambda tmp: fig.savefig(tmp, dpi=130, format="png"))
    plt.close(fig)


def _site_order(sites) -> list[str]:
    # emb, then the blocks in depth order, then logits: the order a signal flows
    def key(site: str):
        if site == "emb":
            return (0, 0, "")
        if site == "logits":
            return (2, 0, "")
        _, i, part = site.split(".")
        return (1, int(i), part)

    return sorted(set(sites), key=key)


def coord_check_figure(table: pd.DataFrame, out, max_panels: int = 5) -> None:
    """RMS against width, one panel per (parametrization, step), one line per site.

    Flat lines are what muP promises; lines rising with width are SP's growing updates.
    """
    sns.set_theme(style="whitegrid", context="notebook")
    labels = list(dict.fromkeys(table["parametrization"]))
    steps = sorted(table["step"].unique())
    if len(steps) > max_panels:  # keep the first and last steps, evenly spread in between
        steps = sorted({steps[round(i)] for i in np.linspace(0, len(steps) - 1, max_panels)})
    sites = _site_order(table["site"])
    colors = dict(zip(sites, sns.color_palette("viridis", len(sites)), strict=True))
    means = table.groupby(["parametrization", "step", "site", "width"])["rms"].mean()
    fig, axes = plt.subplots(len(labels), len(steps), figsize=(3.1 * len(steps),
                             2.8 * len(labels)), sharex=True, sharey=True, squeeze=False)
    for r, label in enumerate(labels):
        for c, step in enumerate(steps):
            ax = axes[r][c]
            for site in sites:
                series = means.loc[(label, step, site)]
                ax.plot(series.index, series.values, marker="o", ms=3, color=colors[site],
                        lw=2.2 if site == "logits" else 1.2, label=site)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{NAMES.get(label, label)}, step {step}", fontsize=10)
            if r == len(labels) - 1:
                ax.set_xlabel("width (n_embd)")
            if c == 0:
                ax.set_ylabel("RMS of activation")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle("Coordinate check: activation size against width after each AdamW step")
    _save(fig, out)


def lr_transfer_figure(points: pd.DataFrame, fit: dict, out, axis: str = "width",
                       values_key: str = "widths", label: str = "width") -> None:
    """Final loss against LR, one curve per value of the swept shape (`axis`: the points'
    column, "width" or "n_layer"; `values_key`: the fit's list of its values), one panel per
    parametrization side by side; the parabola's eta* marked per curve, diverged runs as
    crosses at the top of the panel. Serves the width (lr_transfer) and depth sweeps."""
    sns.set_theme(style="whitegrid", context="notebook")
    present = set(points["parametrization"])
    names = [p for p in ("sp", "mup", "completep") if p in present]
    names += sorted(present - set(names))
    values = sorted(points[axis].unique())
    colors = dict(zip(values, sns.color_palette("viridis", len(values)), strict=True))
    ok = points[~points["diverged"]]
    top = ok["loss"].max() if len(ok) else 1.0
    low = ok["loss"].min() if len(ok) else 0.0
    ceiling = top + 0.08 * max(top - low, 1e-3)
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.6), sharey=True,
                             squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        res = fit["parametrizations"].get(name, {})
        best = dict(zip(res.get(values_key, []), res.get("best_lr", []), strict=True))
        for value in values:
            at = points[(points["parametrization"] == name) & (points[axis] == value)]
            good, bad = at[~at["diverged"]], at[at["diverged"]]
            ax.plot(good["lr"], good["loss"], marker="o", color=colors[value],
                    label=f"{label} {value}")
            ax.scatter(bad["lr"], np.full(len(bad), ceiling), marker="x", color=colors[value])
            eta = best.get(int(value), float("nan"))
            if math.isfinite(eta):
                ax.axvline(eta, color=colors[value], ls=":", lw=1)
        title = NAMES.get(name, name)
        if "slope" in res:
            title += f": slope of log eta* vs log {label} = {res['slope']:+.2f}"
        if "spread_grid_steps" in res:
            title += f", spread {res['spread_grid_steps']:.2f} steps"
        ax.set_title(title, fontsize=10)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("peak learning rate")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel(f"final validation loss ({fit.get('tokens', 0):,} tokens)")
    fig.suptitle(f"Learning-rate transfer across {label} (dotted: eta* from the parabola; "
                 "x: diverged)", fontsize=11)
    _save(fig, out)
