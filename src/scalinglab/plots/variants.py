"""The variants phase's figures, drawn from results/<name>/runs.csv and <name>.json.

- `frontier_figure`: loss against compute for every run of every variant, each variant's compute
  frontier (the lowest loss per budget) with its fitted law L_opt = coef·C^exponent, and below it
  the frontier's relative residuals from that law (SP against muP: results/figures/sp_vs_mup.png).
- `envelope_figure`: final loss against compute for every run of every variant, each variant's
  lower envelope (the best size per budget, Method 1) and a power law through it.
- `isoflop_figure`: one IsoFLOP panel per variant (loss against ACTIVE parameters per budget,
  the Method 2 parabolas and their minima), and a last panel with every variant's N_opt(C).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on the machines that run the workflow

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, NullFormatter  # noqa: E402

from scalinglab import atomic  # noqa: E402


def _save(fig, out: str) -> None:
    fig.tight_layout()
    atomic.write_with(out, lambda tmp: fig.savefig(tmp, dpi=130, format="png"))
    plt.close(fig)


def _colors(names) -> dict:
    names = list(names)
    return dict(zip(names, sns.color_palette("tab10", len(names)), strict=True))


def _ok(fit: dict) -> bool:
    return bool(fit) and "error" not in fit


def _budget_ticks(ax, budgets) -> None:
    """Label the budgets themselves: a few budgets within a decade get no log-axis label."""
    ax.set_xticks(list(budgets), [f"{c:.2g}" for c in budgets])
    ax.xaxis.set_minor_formatter(NullFormatter())


def _variant_label(name: str, v: dict) -> str:
    settings = v.get("settings", {})
    if "parametrization" not in settings:
        return name
    return f"{name} ({settings['parametrization']}, lr {settings['lr']:.2g})"


def frontier_figure(runs: pd.DataFrame, result: dict, out: str) -> None:
    sns.set_theme(style="whitegrid", context="notebook")
    fig, (ax, res_ax) = plt.subplots(2, 1, figsize=(8, 7), sharex=True,
                                     gridspec_kw={"height_ratios": [3, 1.2]})
    variants = result["variants"]
    colors = _colors(variants)
    c_all = runs["C"].to_numpy(float)
    grid = np.geomspace(c_all.min() / 1.3, c_all.max() * 1.3, 50)
    # residual markers side by side at each budget, so that equal values stay visible
    shifts = np.geomspace(0.95, 1.05, len(variants)) if len(variants) > 1 else [1.0]
    for shift, (name, v) in zip(shifts, variants.items(), strict=True):
        color = colors[name]
        rows = runs[runs["variant"] == name]
        ax.plot(rows["C"], rows["loss"], "o", color=color, alpha=0.3, ms=5)
        law = v.get("loss_law", {})
        if not _ok(law):
            ax.plot([], [], "o", color=color,
                    label=f"{_variant_label(name, v)}: no frontier law ({law.get('error')})")
            continue
        points = pd.DataFrame(law["points"])
        ci = law.get("ci")
        text = f"L_opt = {law['coef']:.3g}·C^{law['exponent']:.3f}"
        if ci:
            text += f" [{ci['exponent'][0]:.3f}, {ci['exponent'][1]:.3f}]"
        ax.plot(grid, law["coef"] * grid ** law["exponent"], "--", color=color, lw=1.3)
        ax.plot(points["C"], points["loss_opt"], "s", color=color, ms=8, mec="black",
                label=f"{_variant_label(name, v)}: {text}")
        res_ax.plot(points["C"] * shift, 100 * points["relative_residual"], "s-", color=color,
                    ms=7, mec="black", lw=1.0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%.2f"))
    ax.set_ylabel("final validation loss")
    title = "Loss against compute: each variant's frontier and its law"
    comparison = result.get("comparison")
    if comparison:
        for name, c in comparison["variants"].items():
            diff = c.get("exponent_difference")
            if diff:
                title += (f"\n{name} - {comparison['reference']}: exponent "
                          f"{diff['value']:+.3f} [{diff['ci'][0]:+.3f}, {diff['ci'][1]:+.3f}]"
                          f", {c['verdict']}")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    res_ax.axhline(0.0, color="black", lw=0.8)
    res_ax.set_xscale("log")
    _budget_ticks(res_ax, sorted(runs["C"].unique()))
    res_ax.set_xlabel("compute C (FLOPs)")
    res_ax.set_ylabel("frontier residual (%)")
    _save(fig, out)


def envelope_figure(runs: pd.DataFrame, result: dict, out: str) -> None:
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(8, 5.5))
    variants = result["variants"]
    colors = _colors(variants)
    c_all = runs["C"].to_numpy(float)
    grid = np.geomspace(c_all.min() / 1.3, c_all.max() * 1.3, 50)
    for name, v in variants.items():
        color = colors[name]
        rows = runs[runs["variant"] == name]
        ax.plot(rows["C"], rows["loss"], "o", color=color, alpha=0.35, ms=5)
        env = v["envelope"]
        if not _ok(env):
            ax.plot([], [], "o", color=color, label=f"{name}: envelope failed")
            continue
        front = pd.DataFrame(env["budgets"])
        label = f"{name}: {env['tokens_per_param']:.0f} tokens/active param"
        law = v.get("loss_law", {})
        if _ok(law):
            ax.plot(grid, law["coef"] * grid ** law["exponent"], "--", color=color, lw=1.2)
            label += f", L_opt ~ C^{law['exponent']:.3f}"
        ax.plot(front["C"], front["loss_opt"], "s-", color=color, ms=7, lw=1.6, label=label)
    ax.set_xscale("log")
    _budget_ticks(ax, sorted(runs["C"].unique()))
    ax.set_xlabel("compute C (FLOPs, active parameters)")
    ax.set_ylabel("final validation loss")
    ax.set_title("Loss against compute per variant: runs and lower envelope (Method 1)")
    ax.legend(fontsize=8)
    _save(fig, out)


def isoflop_figure(runs: pd.DataFrame, result: dict, out: str) -> None:
    sns.set_theme(style="whitegrid", context="notebook")
    variants = result["variants"]
    colors = _colors(variants)
    n = len(variants)
    fig, axes = plt.subplots(1, n + 1, figsize=(4.2 * (n + 1), 4.4), squeeze=False)
    axes = axes[0]
    budgets = sorted(runs["C"].unique())
    shades = dict(zip(budgets, sns.color_palette("rocket_r", len(budgets)), strict=True))
    for ax, (name, v) in zip(axes, variants.items(), strict=False):
        rows = runs[runs["variant"] == name]
        iso = v["isoflop"]
        optima = iso.get("budgets", []) if _ok(iso) else []
        for budget in budgets:
            group = rows[rows["C"] == budget].sort_values("N")
            if group.empty:
                continue
            shade = shades[budget]
            ax.plot(group["N"], group["loss"], "o", color=shade, label=f"C={budget:.2g}")
            best = next((b for b in optima if np.isclose(b["C"], budget, rtol=1e-6)), None)
            if best is None or len(group) < 3:
                continue
            # the least-squares parabola in log N that fitting.isoflop fits per budget
            x = np.log(group["N"].to_numpy(float))
            coeffs = np.polyfit(x, group["loss"].to_numpy(float), 2)
            xs = np.linspace(x.min(), x.max(), 100)
            ax.plot(np.exp(xs), np.polyval(coeffs, xs), "-", color=shade, lw=1.1)
            ax.plot(best["N_opt"], best["loss_opt"], "*", color=shade, ms=13, mec="black")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on short spans
        ax.set_xlabel("active non-embedding parameters N")
        ax.set_ylabel("final validation loss")
        title = (f"{name}: a = {iso['a']:.2f}, {iso['tokens_per_param']:.0f} tok/param"
                 if _ok(iso) else f"{name}: fit failed")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    ax = axes[-1]
    c_grid = np.geomspace(min(budgets) / 1.3, max(budgets) * 1.3, 50)
    for name, v in variants.items():
        iso = v["isoflop"]
        if not _ok(iso):
            continue
        front = pd.DataFrame(iso["budgets"])
        ax.plot(front["C"], front["N_opt"], "o", color=colors[name])
        ax.plot(c_grid, iso["k_n"] * c_grid ** iso["a"], "-", color=colors[name],
                label=f"{name}: N_opt ~ C^{iso['a']:.2f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _budget_ticks(ax, budgets)
    ax.set_xlabel("compute C (FLOPs)")
    ax.set_ylabel("N_opt (active)")
    ax.set_title("IsoFLOP minima per variant (Method 2)", fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, out)
