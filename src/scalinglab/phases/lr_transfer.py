"""The learning-rate transfer phase: does the best LR stay put as the model widens?

muP's promise (Tensor Programs V, arXiv:2203.03466; used by Cerebras-GPT, arXiv:2304.03208, and
MiniCPM, arXiv:2404.06395) is that the LR tuned on a narrow proxy is still optimal when the model
is wider. This phase measures it: widths x a log2-spaced LR grid x parametrizations x seeds, every
run trained on the same number of tokens, one depth. The best LR per width, eta*, comes from a
parabola in log2 LR through the grid minimum and its two neighbours; the slope of log eta* against
log width is ~0 when the LR transfers and negative under SP (where hidden updates grow with
width, so the best LR must shrink, roughly like 1/width for Adam).

Each run is a "series" with a single WSD branch: the stable job trains to that branch's decay
start, the decay job finishes it, through the same `train stable` / `train branch` verbs and
spec format as the IsoFLOP phase (`study.series_spec`). Every run's id is canonical, built here,
never in Snakemake: `lrt-<p>-l<layers>-d<width>-h<heads>-lr<lr>-b<batch>-s<seed>_D<tokens>`, e.g.
`lrt-mup-l2-d64-h2-lr4e-03-b16-s0_D262144`.

A run that diverged (stopped early by training, see `training.divergence`; or a non-finite
final loss, or a final loss above ln(vocab), the loss of a uniform guess that every run starts
near) is kept in the table and the figure, marked `diverged`, and left out of the parabola.

The `lr_transfer` section itself is `scalinglab.config.lr_transfer.LrTransferConfig`.
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
from scalinglab.phases.base import Phase
from scalinglab.phases.runs import finished_run
from scalinglab.training.schedule import decay_start_step
from scalinglab.training.spec import RunSpec

PHASE = "lr_transfer"
SERIES_PREFIX = "lrt"
# The target for "the LR transfers": eta* moves by at most one grid step (2x on the
# default grid) across a width range of at least 4x.
MAX_SPREAD_GRID_STEPS = 1.0
MIN_WIDTH_RANGE = 4.0


def check_config(cfg) -> None:
    """Checks of the `lr_transfer` section against the rest of the study config."""
    lt = cfg.lr_transfer
    if not lt.enabled or "mup" not in lt.parametrizations:
        return
    base = cfg.parametrization.base_width
    for i, width in enumerate(lt.widths):
        if width < base:
            raise UserError(f"lr_transfer.widths[{i}]: muP needs width >= "
                            f"parametrization.base_width={base}, got {width}")
        if width % base:
            # m = width / base_width is meant to be a whole multiple of the base (proxy) width
            raise UserError(f"lr_transfer.widths[{i}]: parametrization.base_width={base} "
                            f"does not divide width {width}")


def series_id(p: str, n_layer: int, width: int, n_head: int, lr: float, batch_size: int,
              seed: int) -> str:
    return (f"{SERIES_PREFIX}-{p}-l{n_layer}-d{width}-h{n_head}-lr{study.format_number(lr)}"
            f"-b{batch_size}-s{seed}")


def plan(cfg) -> pd.DataFrame:
    """One row per run, in the column layout of `study.plan_isoflop` (so that
    `study.series_spec` can read it) plus `seed`. Empty when the phase is off."""
    check_config(cfg)
    lt = cfg.lr_transfer
    if not lt.enabled:
        return pd.DataFrame()
    batch_tokens = study.batch_tokens(cfg)
    steps = max(1, round(lt.tokens / batch_tokens))
    tokens = steps * batch_tokens
    warmup = study.warmup_steps(cfg)
    if cfg.schedule.kind == "cosine":
        decay_start = 0  # a cosine run cannot be branched: the decay job trains it all
    else:
        decay_start = decay_start_step(steps, cfg.schedule.decay_fraction,
                                       cfg.schedule.decay_shape)
        if decay_start < warmup:
            raise UserError(f"lr_transfer.tokens: {tokens:,} tokens = {steps} steps decay from "
                            f"step {decay_start}, inside the warmup of {warmup} steps "
                            f"(training.warmup_tokens); raise lr_transfer.tokens")
    label = f"D{tokens}"  # exact: format_number would round 262144 to 2.621e5
    rows = []
    for p in lt.parametrizations:
        pcfg = replace(cfg.parametrization, name=p)
        for width in lt.widths:
            size = SizeConfig(lt.n_layer, width, lt.n_head)
            counts = model_counts(study.gpt_config(replace(cfg, parametrization=pcfg), size),
                                  cfg.flops.convention)
            for lr in lt.lrs:
                for seed in lt.seeds:
                    sid = series_id(p, lt.n_layer, width, lt.n_head, lr,
                                    cfg.training.batch_size, seed)
                    rows.append({
                        "phase": PHASE, "series_id": sid, "label": label,
                        "run_id": f"{sid}_{label}", "parametrization": p,
                        "n_layer": lt.n_layer, "n_embd": width, "n_head": lt.n_head,
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


def series_spec(cfg, table: pd.DataFrame, sid: str) -> RunSpec:
    """The spec file of one run, in the format `train.train_stable` / `decay_branch` read."""
    rows = table[table["series_id"] == sid]
    if rows.empty:
        raise UserError(f"unknown lr_transfer run {sid!r}")
    return study.series_spec(run_config(cfg, rows.iloc[0]), rows, sid)


# -- analysis -------------------------------------------------------------------------------------
def read_runs(run_jsons) -> pd.DataFrame:
    """One row per finished decay branch: parametrization, width, lr, seed, loss, diverged."""
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
        raise UserError("lr-transfer: no runs given")
    return pd.DataFrame(rows).sort_values(["parametrization", "width", "lr", "seed"],
                                          ignore_index=True)


def is_diverged(loss: float, vocab_size: int) -> bool:
    """Non-finite, or worse than the ln(vocab) of a uniform guess that training starts from."""
    return not math.isfinite(loss) or loss > math.log(vocab_size)


def mean_over_seeds(runs: pd.DataFrame) -> pd.DataFrame:
    """One point per (parametrization, width, lr): the mean loss of the seeds that did not
    diverge; the point is diverged only when every seed did."""
    def summarise(group: pd.DataFrame) -> pd.Series:
        ok = group[~group["diverged"]]
        return pd.Series({"loss": ok["loss"].mean() if len(ok) else float("nan"),
                          "loss_std": ok["loss"].std(ddof=0) if len(ok) else float("nan"),
                          "seeds": len(ok), "diverged": ok.empty})

    keys = ["parametrization", "width", "lr"]
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


def slope(widths, lrs) -> float:
    """Least-squares slope of log eta* against log width (0: the LR transfers)."""
    w, e = np.log(np.asarray(widths, float)), np.log(np.asarray(lrs, float))
    keep = np.isfinite(e)
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(w[keep], e[keep], 1)[0])


def transfer_verdict(widths, best_lrs, at_edge, grid_step: float) -> dict:
    """Does eta* transfer? True when it moves by at most `MAX_SPREAD_GRID_STEPS` grid steps
    across widths spanning at least `MIN_WIDTH_RANGE`x, and every width has an optimum inside
    the grid: where every run diverged there is none, and at the edge of the grid the true
    optimum may lie beyond it, so the spread is not measured.
    Returns {"transfers": bool, "width_range": widest / narrowest width}."""
    width_range = max(widths) / min(widths)
    lrs = np.asarray(best_lrs, dtype=float)
    if len(lrs) < 2 or not np.isfinite(lrs).all() or any(at_edge) or not grid_step > 0:
        return {"transfers": False, "width_range": float(width_range)}
    spread = math.log2(lrs.max() / lrs.min()) / grid_step
    ok = spread <= MAX_SPREAD_GRID_STEPS + 1e-9 and width_range >= MIN_WIDTH_RANGE
    return {"transfers": bool(ok), "width_range": float(width_range)}


def analyse(runs: pd.DataFrame) -> dict:
    """The content of `results/fits/lr_transfer.json` from `read_runs`' table."""
    points = mean_over_seeds(runs)
    grid = np.sort(runs["lr"].unique())
    grid_step = float(np.median(np.diff(np.log2(grid)))) if len(grid) > 1 else float("nan")
    out = {"grid_lrs": grid.tolist(), "grid_step_log2": grid_step,
           "tokens": int(runs["D"].iloc[0]), "seeds": sorted(runs["seed"].unique().tolist()),
           "parametrizations": {}}
    for p, group in points.groupby("parametrization", sort=True):
        widths, best = [], []
        for width, at in group.groupby("width", sort=True):
            losses = np.where(at["diverged"], np.nan, at["loss"])
            best.append(best_lr(at["lr"], losses))
            widths.append(int(width))
        lrs = [b["lr"] for b in best]
        finite = [v for v in lrs if math.isfinite(v)]
        spread = math.log2(max(finite) / min(finite)) if finite else float("nan")
        out["parametrizations"][str(p)] = {
            "widths": widths,
            "best_lr": lrs,
            "best_loss": [b["loss"] for b in best],
            "grid_best_lr": [b["grid_lr"] for b in best],
            "at_grid_edge": [b["edge"] for b in best],
            "slope": slope(widths, lrs),
            # how far eta* moves over the widths, in octaves and in grid steps
            "spread_log2": spread,
            "spread_grid_steps": spread / grid_step if grid_step > 0 else float("nan"),
            "diverged_runs": int(runs[(runs["parametrization"] == p)]["diverged"].sum()),
            **transfer_verdict(widths, lrs, [b["edge"] for b in best], grid_step),
        }
    return out


# -- the phase, on the shared abstraction (scalinglab.phases.base) ----------------------------
@dataclass(frozen=True)
class LrTransfer(Phase):
    name: str = PHASE
    section: str = "lr_transfer"

    def plan(self, cfg):
        return plan(cfg)

    def series_spec(self, cfg, table, sid):
        return series_spec(cfg, table, sid)

    def targets(self, cfg):
        if not self.enabled(cfg):
            return []
        return ["results/muP/lr_transfer_plan.csv", "results/fits/lr_transfer.json",
                "results/figures/lr_transfer.png"]

    def summary(self, cfg):
        table = self.plan(cfg)
        if table.empty:
            return []
        return [f"lr_transfer: {len(table)} runs, {table['C'].sum():.3g} FLOPs"]


@dataclass(frozen=True)
class CoordCheck(Phase):
    name: str = "coord_check"

    def targets(self, cfg):
        return ["results/muP/coord_check.csv", "results/muP/coord_check.json",
                "results/figures/coord_check.png"]
