"""Paper figures, redrawn from vendored data and the published-laws table.

`python -m scalinglab paper-figure NAME --out PATH [--study-fit FIT.json] [--data CSV]`

- cs336_isoflops: Chinchilla-style IsoFLOP parabolas and the fitted N_opt(C) (vendored CS336, MIT)
- porian_exponents: Porian et al.'s steps from Kaplan to Chinchilla, a with 95% CI (vendored, MIT)
- published_laws: tokens per parameter against compute for every law in published_laws.yaml,
  with the study's own isoflop/envelope fit overlaid when `--study-fit` is given
- published_hparams: DeepSeek's eta_opt(C) and B_opt(C), MiniCPM's and Kaplan's batch-size laws
- epoch_refit: Method 3 refit of Epoch's Chinchilla points (not shipped: `--data PATH`)
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np

from scalinglab.errors import UserError

C_RANGE = (1e17, 1e26)
PORIAN_STEPS = (
    "Reproducing Kaplan et al.",
    "Counting last layer FLOPs",
    "Correcting warmup",
    "Cosine decay",
    "Optimizer tuning (no decay)",
)


def _data_file(name: str) -> Path:
    return Path(str(resources.files("scalinglab") / "data" / "paper" / name))


def load_published_laws() -> dict:
    """The cited table `published_laws.yaml` as plain Python data."""
    import yaml

    return yaml.safe_load((resources.files("scalinglab") / "published_laws.yaml").read_text())


def load_cs336():
    """(C, N, loss) of the 72 CS336 IsoFLOP points."""
    rows = json.loads(_data_file("cs336_isoflops_curves.json").read_text())
    cols = zip(
        *((r["compute_budget"], r["parameters"], r["final_loss"]) for r in rows), strict=True
    )
    return tuple(np.array(c, float) for c in cols)


def load_porian():
    """(optimal pairs, published fits) as DataFrames; pairs without an optimum dropped."""
    import pandas as pd

    pairs = pd.read_csv(_data_file("porian_optimal_pairs.csv")).dropna(subset=["n"])
    return pairs, pd.read_csv(_data_file("porian_fits.csv"))


def porian_steps(frame):
    """The RefinedWeb rows of the Kaplan-to-Chinchilla steps, in the paper's order."""
    rows = frame[(frame["dataset"] == "rw") & (frame["param_count"] != "attention")]
    return [rows[rows["label"] == label] for label in PORIAN_STEPS]


def tokens_per_param(law: dict, C) -> np.ndarray:
    """D_opt/N_opt at compute C for one `compute_optimal` entry of the table."""
    from scalinglab.fitting.inputs import FLOPS_PER_PARAM_TOKEN
    from scalinglab.fitting.parametric import compute_optimal

    C = np.asarray(C, float)
    alloc = law["allocation"]
    kind = alloc["kind"]
    if kind == "n_power":
        n = alloc["coef"] * (C / alloc.get("c_unit", 1.0)) ** alloc["exponent"]
        return C / (FLOPS_PER_PARAM_TOKEN * n**2)
    if kind == "projections":
        n, d = np.array(alloc["pairs"], float).T
        slope, intercept = np.polyfit(np.log(6 * n * d), np.log(d / n), 1)
        return np.exp(intercept + slope * np.log(C))
    if kind == "parametric":
        n, d = compute_optimal(alloc, C)
        return d / n
    if kind == "d_power":
        anchor = alloc.get("anchor")
        if anchor:
            d = anchor["D"] * (C / anchor["C"]) ** alloc["exponent"]
        else:
            d = alloc["coef"] * C ** alloc["exponent"]
        return d / (C / (FLOPS_PER_PARAM_TOKEN * d))
    if kind == "m_d_power":
        m = alloc["m_coef"] * C ** alloc["a"]
        d = alloc["d_coef"] * C ** alloc["b"]
        return FLOPS_PER_PARAM_TOKEN * d / m
    if kind == "ratio":
        return np.full_like(C, float(alloc["tokens_per_param"]))
    raise ValueError(f"published law {law.get('id')!r}: unknown allocation kind {kind!r}")


def load_study_fit(path: str | None) -> dict | None:
    """An isoflop/envelope fit JSON (keys a, k_n, b, k_d, budgets), checked; None if no path."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--study-fit {path!r}: file does not exist")
    try:
        fit = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"--study-fit {path!r}: not readable JSON ({err})") from err
    missing = [k for k in ("a", "k_n", "b", "k_d", "budgets") if k not in fit]
    if missing:
        raise UserError(f"--study-fit {path!r}: missing key(s) {missing}")
    return fit


# --------------------------------------------------------------------------------------------
# Figures: each takes the output path (and its inputs) and writes one PNG atomically.


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    return plt


def _log_log(ax, xlabel: str, ylabel: str, title: str, *, legend_size: int = 7, **more) -> None:
    """Both axes logarithmic, labelled and titled, with a legend in small type."""
    ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=ylabel, title=title, **more)
    ax.legend(fontsize=legend_size)


def _save(fig, out) -> None:
    """Lay the figure out, write it as one PNG atomically, and close it."""
    import matplotlib.pyplot as plt

    from scalinglab.atomic import write_with

    fig.tight_layout()
    write_with(out, lambda tmp: fig.savefig(tmp, format="png", dpi=150))
    plt.close(fig)


def draw_cs336_isoflops(out) -> None:
    from scalinglab.fitting.envelope import fit_envelope
    from scalinglab.fitting.isoflop import fit_isoflop

    plt = _pyplot()
    C, N, loss = load_cs336()
    iso = fit_isoflop(C, N, loss)
    env = fit_envelope(np.arange(len(C)), C, N, loss)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(np.unique(C))))
    for color, c in zip(colors, np.unique(C), strict=True):
        rows = C == c
        left.scatter(N[rows], loss[rows], color=color, s=14, label=f"{c:.0e}")
        coef = np.polyfit(np.log(N[rows]), loss[rows], 2)
        grid = np.geomspace(N[rows].min(), N[rows].max(), 100)
        left.plot(grid, np.polyval(coef, np.log(grid)), color=color, lw=1)
    for b in iso.budgets:
        left.scatter(b.N_opt, b.loss_opt, marker="x", color="black", s=25, zorder=3)
    left.set(
        xscale="log",
        xlabel="parameters N",
        ylabel="final loss",
        title="CS336 IsoFLOP profiles (parabola in log N)",
    )
    left.legend(title="C (FLOPs)", fontsize=6, ncol=2)
    grid = np.geomspace(C.min(), 1e24, 100)
    for fit, marker, name in ((iso, "o", "Method 2 (parabola)"), (env, "s", "Method 1 (argmin)")):
        cs = [b.C for b in fit.budgets]
        line = right.plot(
            grid, fit.n_opt(grid), lw=1.2, label=f"{name}: N = {fit.k_n:.3g} C^{fit.a:.4f}"
        )[0]
        right.scatter(cs, [b.N_opt for b in fit.budgets], marker=marker, color=line.get_color())
    _log_log(right, "compute C (FLOPs)", "N_opt", "Compute-optimal model size")
    _save(fig, out)


def draw_porian_exponents(out) -> None:
    from scalinglab.fitting.powerlaw import loglog_fit

    plt = _pyplot()
    pairs, fits = load_porian()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for rows, label in zip(porian_steps(pairs), PORIAN_STEPS, strict=True):
        coef, a = loglog_fit(rows["flops"], rows["n"])
        points = left.scatter(rows["flops"], rows["n"], s=10)
        grid = np.geomspace(rows["flops"].min(), rows["flops"].max(), 50)
        left.plot(
            grid,
            coef * grid**a,
            color=points.get_facecolor()[0],
            lw=1,
            label=f"{label}: least-squares a={a:.3f}",
        )
    _log_log(
        left,
        "compute C (FLOPs)",
        "N* (per budget)",
        "Porian et al. optimal pairs, RefinedWeb",
        legend_size=6,
    )
    x = np.arange(len(PORIAN_STEPS))
    for shift, dataset, marker in ((-0.1, "rw", "o"), (0.1, "owt2", "s")):
        table = fits[fits["dataset"] == dataset]
        rows = [
            table[(table["label"] == s) & (table["param_count"] != "attention")]
            for s in PORIAN_STEPS
        ]
        a = np.array([r["a_n_exponent"].iloc[0] for r in rows])
        lo = np.array([r["a_ci95_lo"].iloc[0] for r in rows])
        hi = np.array([r["a_ci95_hi"].iloc[0] for r in rows])
        right.errorbar(
            x + shift,
            a,
            yerr=[a - lo, hi - a],
            fmt=marker,
            capsize=3,
            label={"rw": "RefinedWeb", "owt2": "OpenWebText2"}[dataset],
        )
        if dataset == "rw":
            for xi, ai in zip(x, a, strict=True):
                right.annotate(
                    f"{ai:.3f}",
                    (xi - 0.1, ai),
                    xytext=(-28, 0),
                    textcoords="offset points",
                    fontsize=7,
                )
    right.axhline(0.73, color="grey", ls=":", lw=1, label="Kaplan et al. 0.73")
    right.axhline(0.50, color="grey", ls="--", lw=1, label="Chinchilla 0.50")
    right.set_xticks(x, [s.replace(" (", "\n(") for s in PORIAN_STEPS], fontsize=7, rotation=15)
    right.set(ylabel="a in N* ∝ C^a (95% CI)", title="From Kaplan to Chinchilla (arXiv 2406.19146)")
    right.legend(fontsize=7)
    _save(fig, out)


def draw_published_laws(out, study_fit: str | None = None) -> None:
    plt = _pyplot()
    table = load_published_laws()
    study = load_study_fit(study_fit)
    grid = np.geomspace(*C_RANGE, 200)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for law in table["compute_optimal"]:
        line = ax.plot(grid, tokens_per_param(law, grid), lw=1.3, label=law["label"])[0]
        anchor = law["allocation"].get("anchor")
        if anchor:
            ax.scatter(anchor["C"], anchor["D"] / anchor["N"], color=line.get_color(), s=18)
    if study is not None:
        cs = np.array([b["C"] for b in study["budgets"]], float)
        ratio = study["k_d"] / study["k_n"]
        inside = np.geomspace(cs.min(), cs.max(), 50)
        line = ax.plot(
            inside,
            ratio * inside ** (study["b"] - study["a"]),
            color="black",
            lw=2.2,
            label=f"this study ({study.get('method', 'fit')})",
        )[0]
        ax.plot(
            grid, ratio * grid ** (study["b"] - study["a"]), color=line.get_color(), lw=1, ls="--"
        )
        ax.scatter(cs, [b["D_opt"] / b["N_opt"] for b in study["budgets"]], color="black", s=14)
    _log_log(
        ax,
        "training compute C (FLOPs)",
        "compute-optimal tokens per parameter D/N",
        "Published compute-optimal allocations",
        ylim=(0.1, 1000),  # Kaplan's law falls to ~0.01 at 1e26 and would squash the rest
    )
    _save(fig, out)


def draw_published_hparams(out) -> None:
    plt = _pyplot()
    laws_by_id = {h["id"]: h for h in load_published_laws()["hyperparameters"]}
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    grid = np.geomspace(*C_RANGE, 100)
    losses = np.linspace(1.8, 4.0, 100)
    panels = (
        (axes[0], ["deepseek_lr"], grid, "compute C (FLOPs)", "optimal peak learning rate"),
        (axes[1], ["deepseek_batch"], grid, "compute C (FLOPs)", "optimal batch (tokens)"),
        (axes[2], ["minicpm_batch", "kaplan_critical_batch"], losses, "loss", "batch (tokens)"),
    )
    for ax, ids, x, xlabel, ylabel in panels:
        for key in ids:
            h = laws_by_id[key]
            ax.plot(x, h["coef"] * x ** h["exponent"], label=f"{h['label']}\n{h['law']}")
        ax.set(xscale="log" if x is grid else "linear", yscale="log", xlabel=xlabel, ylabel=ylabel)
        ax.legend(fontsize=6)
    fig.suptitle("Published hyperparameter laws (arXiv 2401.02954, 2404.06395, 2001.08361)")
    _save(fig, out)


def draw_epoch_refit(out, data: str | None) -> None:
    from scalinglab.fitting.bench import load_epoch
    from scalinglab.fitting.parametric import fit_parametric

    if data is None:
        raise UserError(
            "epoch_refit needs Epoch's svg_extracted_data.csv, which is not shipped (no licence): "
            "pass --data PATH (the workflow reads it from config key paper.epoch_csv)"
        )
    N, D, loss = load_epoch(data)
    fit = fit_parametric(N, D, loss)
    published = {law["id"]: law for law in load_published_laws()["compute_optimal"]}
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    C = 6 * N * D
    points = left.scatter(N, loss, c=np.log10(C), s=8, cmap="viridis")
    fig.colorbar(points, ax=left, label="log10 C")
    for c in np.geomspace(C.min(), C.max(), 5):
        n = np.geomspace(N.min(), N.max(), 100)
        left.plot(n, fit.loss(n, c / (6 * n)), color="black", lw=0.8, alpha=0.6)
    left.set(
        xscale="log",
        xlabel="parameters N",
        ylabel="loss",
        ylim=(1.9, 5.2),
        title=f"Epoch's Chinchilla points, refit: alpha={fit.alpha:.3f}, beta={fit.beta:.3f}",
    )
    grid = np.geomspace(1e18, 1e26, 100)
    right.plot(
        grid,
        np.divide(*fit.compute_optimal(grid)[::-1]),
        color="black",
        lw=2,
        label=f"this refit: E={fit.E:.3f}, A={fit.A:.0f}, B={fit.B:.0f}",
    )
    for key in ("chinchilla_approach3", "epoch2024"):
        law = published[key]
        right.plot(grid, tokens_per_param(law, grid), label=law["label"])
    _log_log(
        right, "compute C (FLOPs)", "tokens per parameter", "Compute-optimal D/N from Method 3"
    )
    _save(fig, out)


FIGURES = {
    "cs336_isoflops": lambda args: draw_cs336_isoflops(args.out),
    "porian_exponents": lambda args: draw_porian_exponents(args.out),
    "published_laws": lambda args: draw_published_laws(args.out, args.study_fit),
    "published_hparams": lambda args: draw_published_hparams(args.out),
    "epoch_refit": lambda args: draw_epoch_refit(args.out, args.data),
}


def rule_inputs(epoch_csv: str | None = None) -> dict[str, dict[str, str]]:
    """The workflow's paper figures, each with its input files by the `paper-figure` option that
    takes them (`study_fit` -> `--study-fit`). Epoch's points have no licence and are not
    shipped: its figure is planned only when the user names a copy."""
    figures = {"cs336_isoflops": {}, "porian_exponents": {},
               "published_laws": {"study_fit": "results/fits/isoflop.json"},
               "published_hparams": {}}
    if epoch_csv:
        figures["epoch_refit"] = {"data": epoch_csv}
    return figures


def option_text(inputs: dict[str, str]) -> str:
    """`--study-fit PATH ...`: the options of `paper-figure` that name a figure's inputs."""
    return " ".join(f"--{name.replace('_', '-')} {path}" for name, path in inputs.items())


def run(args) -> int:
    FIGURES[args.name](args)
    print(f"wrote {args.out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "paper-figure",
        help="redraw a paper figure (vendored data, published laws)",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("name", choices=sorted(FIGURES), help="which figure")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--study-fit", help="published_laws: overlay this isoflop/envelope fit JSON")
    p.add_argument("--data", help="epoch_refit: Epoch's svg_extracted_data.csv")
    p.set_defaults(func=run)
