"""What every learning-rate transfer sweep shares: its run table, its specs and its analysis.

A transfer sweep trains a log2-spaced LR grid at several shapes along one axis (width for
`lr_transfer`, depth for `depth_transfer`) under several parametrizations, every run on the same
number of tokens, and asks whether the best LR, eta*, stays put along the axis. Both phases plan
through `plan_rows`, read their runs through `read_runs` and fit through `analyse`; a phase says
only which shapes it trains and along which `Axis` it measures.

Each run is a "series" with a single WSD branch: the stable job trains to that branch's decay
start, the decay job finishes it, through the same `train stable` / `train branch` verbs and
spec format as the IsoFLOP phase (`study.series_spec`).

eta* per shape comes from a parabola in log2 LR through the grid minimum and its two
neighbours; the slope of ln eta* against ln(axis value) is ~0 when the LR transfers. A run that
diverged (stopped early by training, see `training.divergence`; or a non-finite final loss, or a
final loss above ln(vocab), the loss of a uniform guess that every run starts near) is kept in
the table and the figure, marked `diverged`, and left out of the parabola.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from scalinglab.config import SizeConfig
from scalinglab.errors import UserError
from scalinglab.model.flops import model_counts
from scalinglab.phases import study
from scalinglab.phases.base import STUDY_SPEC, Phase, Step, group_named
from scalinglab.phases.runs import finished_run
from scalinglab.training.schedule import decay_start_step
from scalinglab.training.spec import RunSpec

# The target for "the LR transfers": eta* moves by at most one grid step (2x on the
# default grid) across a range of the axis of at least 4x.
MAX_SPREAD_GRID_STEPS = 1.0
MIN_RANGE = 4.0


@dataclass(frozen=True)
class Axis:
    """The shape a sweep varies: its column in the runs table (`read_runs`), the fit's key for
    the list of its values and for their range, and its name in words."""

    column: str
    values_key: str
    range_key: str
    label: str


WIDTH = Axis("width", "widths", "width_range", "width")
DEPTH = Axis("n_layer", "depths", "depth_range", "depth")


@dataclass(frozen=True)
class SweepPhase(Phase):
    """A transfer sweep on the shared phase abstraction: a subclass sets `name`, `section`,
    `files` (its targets, when on) and its `plan` and `series_spec`."""

    files: tuple[str, ...] = ()

    def targets(self, cfg):
        return list(self.files) if self.enabled(cfg) else []

    def steps(self, cfg, groups):
        # width (lr_transfer) and depth (depth_transfer): the same verbs on their own tables
        verb, files = self.name.replace("_", "-"), f"results/muP/{self.name}"
        return [
            Step(f"plan_{self.name}", f"{verb} plan --config {{input.spec}} --out {{output.plan}}",
                 inputs={"spec": STUDY_SPEC}, outputs={"plan": f"{files}_plan.csv"}),
            Step(f"fit_{self.name}", f"{verb} fit --runs {{input.runs}} --out {{output.fit}}"
                 " --runs-out {output.runs} --figure {output.figure}",
                 inputs={"runs": group_named(groups, self.name).branch_run_jsons},
                 outputs={"runs": f"{files}_runs.csv"},
                 figures={"fit": (f"results/fits/{self.name}.json", f"{self.name}_fit.rst", "muP"),
                          "figure": (f"results/figures/{self.name}.png", f"{self.name}.rst",
                                     "muP")}),
        ]

    def summary(self, cfg):
        table = self.plan(cfg)
        if table.empty:
            return []
        return [f"{self.name}: {len(table)} runs, {table['C'].sum():.3g} FLOPs"]


def check_width(cfg, width: int, key: str) -> None:
    """A width muP (and CompleteP) can train from `parametrization.base_width`: at least the
    base, and a whole multiple of it (m is meant to be a multiple of the proxy's width)."""
    base = cfg.parametrization.base_width
    if width < base:
        raise UserError(f"{key}: muP needs width >= parametrization.base_width={base}, "
                        f"got {width}")
    if width % base:
        raise UserError(f"{key}: parametrization.base_width={base} does not divide width "
                        f"{width}")


def series_id(prefix: str, p: str, size: SizeConfig, lr: float, batch_size: int,
              seed: int) -> str:
    """A run's canonical series id, e.g. `lrt-mup-l2-d64-h2-lr4e-03-b16-s0`."""
    return (f"{prefix}-{p}-l{size.n_layer}-d{size.n_embd}-h{size.n_head}"
            f"-lr{study.format_number(lr)}-b{batch_size}-s{seed}")


def plan_rows(cfg, phase: str, prefix: str, shapes) -> pd.DataFrame:
    """One row per run, in the column layout of `study.plan_isoflop` (so that
    `study.series_spec` can read it) plus `seed`; empty when the phase is off. The phase's
    config section is `phase` (its `enabled`, `lrs`, `seeds` and `tokens`); `shapes` lists
    (parametrization, SizeConfig); `prefix` starts every series id."""
    section = phase
    sweep = getattr(cfg, section)
    if not sweep.enabled:
        return pd.DataFrame()
    lrs, seeds, tokens = sweep.lrs, sweep.seeds, sweep.tokens
    batch_tokens = study.batch_tokens(cfg)
    steps = max(1, round(tokens / batch_tokens))
    tokens = steps * batch_tokens
    warmup = study.warmup_steps(cfg)
    if cfg.schedule.kind == "cosine":
        decay_start = 0  # a cosine run cannot be branched: the decay job trains it all
    else:
        decay_start = decay_start_step(steps, cfg.schedule.decay_fraction,
                                       cfg.schedule.decay_shape)
        if decay_start < warmup:
            raise UserError(f"{section}.tokens: {tokens:,} tokens = {steps} steps decay from "
                            f"step {decay_start}, inside the warmup of {warmup} steps "
                            f"(training.warmup_tokens); raise {section}.tokens")
    label = f"D{tokens}"  # exact: format_number would round 262144 to 2.621e5
    rows = []
    for p, size in shapes:
        pcfg = replace(cfg.parametrization, name=p)
        counts = model_counts(study.gpt_config(replace(cfg, parametrization=pcfg), size),
                              cfg.flops.convention)
        for lr in lrs:
            for seed in seeds:
                sid = series_id(prefix, p, size, lr, cfg.training.batch_size, seed)
                rows.append({
                    "phase": phase, "series_id": sid, "label": label,
                    "run_id": f"{sid}_{label}", "parametrization": p,
                    "n_layer": size.n_layer, "n_embd": size.n_embd, "n_head": size.n_head,
                    "lr": float(lr), "seed": seed,
                    "batch_size": cfg.training.batch_size,
                    "schedule": study.schedule_name(cfg), "N": counts.N,
                    "N_total": counts.N_total, "flops_per_token": counts.flops_per_token,
                    "C": counts.flops_per_token * tokens,
                    "C_actual": counts.flops_per_token * tokens, "D": tokens,
                    "steps": steps, "decay_start": decay_start, "warmup_steps": warmup,
                    "stable_steps": decay_start, "reason": "",
                })
    return pd.DataFrame(rows)


def run_config(cfg, row):
    """The study config as this run sees it: its parametrization, size, LR and seed, and
    evaluations only where they are used (the branch point and the end), since only the
    final loss enters the analysis and an eval of `eval_tokens` costs a third of a step each."""
    return replace(
        cfg,
        seed=int(row.seed),
        parametrization=replace(cfg.parametrization, name=str(row.parametrization)),
        model=replace(cfg.model, sizes=(SizeConfig(int(row.n_layer), int(row.n_embd),
                                                   int(row.n_head)),)),
        training=replace(cfg.training, lr=float(row.lr), eval_every=int(row.steps)),
    )


def series_spec(cfg, table: pd.DataFrame, sid: str, phase: str) -> RunSpec:
    """The spec file of one run, in the format `train.train_stable` / `decay_branch` read."""
    rows = table[table["series_id"] == sid]
    if rows.empty:
        raise UserError(f"unknown {phase} run {sid!r}")
    return study.series_spec(run_config(cfg, rows.iloc[0]), rows, sid)


# -- analysis -------------------------------------------------------------------------------------
def read_runs(run_jsons, axis: Axis = WIDTH, verb: str = "lr-transfer") -> pd.DataFrame:
    """One row per finished decay branch: parametrization, width, n_layer, lr, seed, loss,
    diverged; sorted along `axis`."""
    rows = []
    for path in run_jsons:
        record, loss = finished_run(path)
        spec = record["spec"]
        vocab = spec["model"]["vocab_size"]
        rows.append({
            "run_id": record["run_id"],
            "parametrization": spec["parametrization"]["name"],
            "width": spec["model"]["n_embd"],
            "n_layer": spec["model"]["n_layer"],
            "lr": spec["training"]["lr"],
            "seed": spec["seed"],
            "D": record["D"],
            "loss": loss,
            "diverged": bool(record.get("diverged", False)) or is_diverged(loss, vocab),
            "wall_seconds": record.get("wall_seconds", float("nan")),
        })
    if not rows:
        raise UserError(f"{verb}: no runs given")
    return pd.DataFrame(rows).sort_values(["parametrization", axis.column, "lr", "seed"],
                                          ignore_index=True)


def is_diverged(loss: float, vocab_size: int) -> bool:
    """Non-finite, or worse than the ln(vocab) of a uniform guess that training starts from."""
    return not math.isfinite(loss) or loss > math.log(vocab_size)


def mean_over_seeds(runs: pd.DataFrame, axis: Axis = WIDTH) -> pd.DataFrame:
    """One point per (parametrization, axis value, lr): the mean loss of the seeds that did not
    diverge; the point is diverged only when every seed did."""
    def summarise(group: pd.DataFrame) -> pd.Series:
        ok = group[~group["diverged"]]
        return pd.Series({"loss": ok["loss"].mean() if len(ok) else float("nan"),
                          "loss_std": ok["loss"].std(ddof=0) if len(ok) else float("nan"),
                          "seeds": len(ok), "diverged": ok.empty})

    keys = ["parametrization", axis.column, "lr"]
    return (runs.groupby(keys)[["loss", "diverged"]].apply(summarise).reset_index()
            .astype({"seeds": int, "diverged": bool}))


def best_lr(lrs, losses) -> dict:
    """eta* from a parabola in log2(lr) through the lowest loss and its two neighbours.

    Diverged or missing points (NaN) are dropped first. When the minimum sits at an end of
    what is left, the vertex is not extrapolated: eta* is that grid point and `edge` is true.
    Returns {"lr": eta*, "loss": the parabola's minimum (or the grid loss), "edge": bool,
    "grid_lr": the grid argmin}.
    """
    lrs = np.asarray(lrs, dtype=float)
    losses = np.asarray(losses, dtype=float)
    keep = np.isfinite(losses)
    x, y, grid = np.log2(lrs[keep]), losses[keep], lrs[keep]
    if len(x) == 0:
        return {"lr": float("nan"), "loss": float("nan"), "edge": True, "grid_lr": float("nan")}
    i = int(np.argmin(y))
    if i == 0 or i == len(x) - 1:
        return {"lr": float(grid[i]), "loss": float(y[i]), "edge": True,
                "grid_lr": float(grid[i])}
    a, b, c = np.polyfit(x[i - 1:i + 2], y[i - 1:i + 2], 2)
    # a > 0 whenever the middle point is a strict minimum of the three; clip for ties
    vertex = float(np.clip(-b / (2 * a), x[i - 1], x[i + 1])) if a > 0 else float(x[i])
    return {"lr": float(2.0**vertex), "loss": float(np.polyval([a, b, c], vertex)),
            "edge": False, "grid_lr": float(grid[i])}


def slope(values, lrs) -> float:
    """Least-squares slope of ln eta* against ln(axis value) (0: the LR transfers)."""
    w, e = np.log(np.asarray(values, float)), np.log(np.asarray(lrs, float))
    keep = np.isfinite(e)
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(w[keep], e[keep], 1)[0])


def transfer_verdict(values, best_lrs, at_edge, grid_step: float, axis: Axis = WIDTH) -> dict:
    """Does eta* transfer? True when it moves by at most `MAX_SPREAD_GRID_STEPS` grid steps
    across axis values spanning at least `MIN_RANGE`x, and every value has an optimum inside
    the grid: where every run diverged there is none, and at the edge of the grid the true
    optimum may lie beyond it, so the spread is not measured.
    Returns {"transfers": bool, axis.range_key: largest / smallest axis value}."""
    span = max(values) / min(values)
    lrs = np.asarray(best_lrs, dtype=float)
    if len(lrs) < 2 or not np.isfinite(lrs).all() or any(at_edge) or not grid_step > 0:
        return {"transfers": False, axis.range_key: float(span)}
    spread = math.log2(lrs.max() / lrs.min()) / grid_step
    ok = spread <= MAX_SPREAD_GRID_STEPS + 1e-9 and span >= MIN_RANGE
    return {"transfers": bool(ok), axis.range_key: float(span)}


def analyse(runs: pd.DataFrame, axis: Axis = WIDTH) -> dict:
    """The fit JSON of a sweep from `read_runs`' table: per parametrization eta* per axis value,
    its slope, how far it moves (`spread_*`: largest over smallest eta*; `drift_grid_steps`:
    the fitted line's change over the range, signed, in grid steps) and the verdict."""
    points = mean_over_seeds(runs, axis)
    grid = np.sort(runs["lr"].unique())
    grid_step = float(np.median(np.diff(np.log2(grid)))) if len(grid) > 1 else float("nan")
    out = {"grid_lrs": grid.tolist(), "grid_step_log2": grid_step,
           "tokens": int(runs["D"].iloc[0]), "seeds": sorted(runs["seed"].unique().tolist()),
           "parametrizations": {}}
    for p, group in points.groupby("parametrization", sort=True):
        values, best = [], []
        for value, at in group.groupby(axis.column, sort=True):
            losses = np.where(at["diverged"], np.nan, at["loss"])
            best.append(best_lr(at["lr"], losses))
            values.append(int(value))
        lrs = [b["lr"] for b in best]
        finite = [v for v in lrs if math.isfinite(v)]
        spread = math.log2(max(finite) / min(finite)) if finite else float("nan")
        fitted = slope(values, lrs)
        drift = fitted * math.log2(max(values) / min(values))  # octaves over the range
        out["parametrizations"][str(p)] = {
            axis.values_key: values,
            "best_lr": lrs,
            "best_loss": [b["loss"] for b in best],
            "grid_best_lr": [b["grid_lr"] for b in best],
            "at_grid_edge": [b["edge"] for b in best],
            "slope": fitted,
            # how far eta* moves along the axis, in octaves and in grid steps
            "spread_log2": spread,
            "spread_grid_steps": spread / grid_step if grid_step > 0 else float("nan"),
            "drift_grid_steps": drift / grid_step if grid_step > 0 else float("nan"),
            "diverged_runs": int(runs[(runs["parametrization"] == p)]["diverged"].sum()),
            **transfer_verdict(values, lrs, [b["edge"] for b in best], grid_step, axis),
        }
    return out
