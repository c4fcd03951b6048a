"""Critical batch size against loss, MiniCPM style: bs_opt = k / L^gamma.

MiniCPM (arXiv:2404.06395, Sec. 4.2) trains one model with several batch sizes and, for each
target loss, finds the batch size that reaches it with the fewest tokens; the optimum grows as
the target loss falls (their fit: bs = 1.21e9 / L^6.24). Kaplan et al. (arXiv:2001.08361,
Sec. 5.1) and McCandlish et al. (arXiv:1812.06162) tell the same story with the critical batch
B_crit = E_min / S_min.

Here every batch size in `critical_batch.batch_tokens` trains the same model at the same constant
learning rate (the warmup, then the stable phase of WSD: no decay, so a curve's loss at step s
does not depend on how long the run was meant to last) for the same number of optimizer steps,
`critical_batch.steps`: that is the steps budget.

The criterion, at each target loss L:
1. T_B(L), the tokens batch B needs to reach L: the first evaluation at which the running minimum
   of its validation loss is <= L, interpolated linearly in log tokens from the evaluation before.
   A batch that does not reach L within the steps budget has no T_B(L).
2. B_opt(L) = argmin_B T_B(L) among the batches that reach L, refined by a parabola in log B
   through the best batch and its two neighbours. It stays the grid point when the best batch is
   an end of the grid (`limited_by: grid`: the optimum may lie beyond) or when a neighbour did
   not reach L (`limited_by: steps_budget`: the smallest batch that reaches L within the steps
   budget is the optimum, as in McCandlish et al.'s picture, where smaller batches always need
   fewer tokens but more steps). Such an optimum is then placed where the batches that reach L
   say the steps budget is met exactly: on McCandlish's line S_B = S_min + E_min / B through
   them, B_opt = E_min / (S_budget - S_min), between the batch that failed and the grid optimum
   (otherwise B_opt(L) would be a staircase of the batch grid).
3. bs_opt = k / L^gamma is fitted (log-log least squares, fitting.hparam_laws) on the losses whose
   optimum is not at an end of the grid, or on all of them, flagged, when fewer than 3 are.
Beside it, McCandlish's B_crit(L) = E_min / S_min, from the least-squares line
S_B = S_min + E_min / B through the batches that reach L (S_B = T_B / B steps, E_B = T_B tokens).

Target losses: `critical_batch.losses`, or when empty `n_losses` levels spaced evenly in log L
between the loss every run has reached by a quarter of the steps budget and the second-lowest
loss any run reaches (so that at least two batch sizes reach every level).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd

from scalinglab.config import SizeConfig
from scalinglab.errors import UserError
from scalinglab.phases import runs as phase_runs
from scalinglab.phases import study
from scalinglab.training.spec import RunSpec

PHASE = "critical_batch"
SERIES_PREFIX = "cb"
LABEL = "stable"


def size(cfg) -> SizeConfig:
    cb = cfg.critical_batch
    return SizeConfig(cb.n_layer, cb.n_embd, cb.n_head)


def run_cfg(cfg, batch_size: int):
    cb = cfg.critical_batch
    return phase_runs.run_config(cfg, size=size(cfg), lr=cb.lr or cfg.training.lr,
                                 batch_size=batch_size, eval_every=cb.eval_every,
                                 eval_tokens=cb.eval_tokens)


def plan(cfg) -> pd.DataFrame:
    """One row per batch size: a stable (constant-LR) run of `steps` steps; empty when off."""
    cb = cfg.critical_batch
    if not cb.enabled:
        return pd.DataFrame()
    rows = []
    for i, tokens in enumerate(cb.batch_tokens):
        key = f"critical_batch.batch_tokens[{i}]"
        batch = phase_runs.batch_size_of(tokens, cfg.model.block_size, key)
        rc = run_cfg(cfg, batch)
        if study.warmup_steps(rc) >= cb.steps:
            raise UserError(f"critical_batch.steps: {cb.steps} steps end inside the warmup of "
                            f"{study.warmup_steps(rc)} steps at {tokens} tokens per batch")
        sid = study.series_id(rc.parametrization.name, size(cfg), rc.training.lr, batch)
        sid = f"{SERIES_PREFIX}-{sid}"
        rows.append(phase_runs.branch_row(rc, phase=PHASE, series_id=sid, label=LABEL,
                                          size=size(cfg), steps=cb.steps, decay_start=cb.steps))
    return phase_runs.finish(rows)


def series_spec(cfg, table: pd.DataFrame, sid: str) -> RunSpec:
    """A stable run with no branches: warmup, then the constant LR for `steps` steps."""
    rows = table[table["series_id"] == sid]
    if rows.empty:
        raise UserError(f"unknown critical_batch run {sid!r}")
    spec = study.series_spec(run_cfg(cfg, int(rows.iloc[0]["batch_size"])), rows, sid)
    return replace(spec, branches=())


# -- analysis -------------------------------------------------------------------------------------
def read_curves(run_jsons) -> pd.DataFrame:
    """Every evaluation of every stable run: batch_tokens, step, tokens, loss."""
    import json
    from pathlib import Path

    rows = []
    for path in run_jsons:
        try:
            record = json.loads(Path(path).read_text())
            lines = (Path(path).parent / "metrics.jsonl").read_text().splitlines()
        except FileNotFoundError as err:
            raise UserError(f"{err.filename}: missing run output") from None
        spec = record["spec"]
        batch = spec["training"]["batch_size"] * spec["model"]["block_size"]
        for line in filter(None, lines):
            m = json.loads(line)
            rows.append({"run_id": spec["series_id"], "batch_tokens": batch, "step": m["step"],
                         "tokens": m["tokens"], "loss": m["val_loss"], "N": spec["N"],
                         "lr": spec["training"]["lr"]})
    if not rows:
        raise UserError("no evaluations in the runs given")
    return pd.DataFrame(rows).sort_values(["batch_tokens", "step"], ignore_index=True)


def tokens_to_reach(tokens, loss, target: float) -> float:
    """Tokens at which the running minimum of `loss` first reaches `target` (NaN: never),
    interpolated linearly in log tokens between the evaluation before and the one that does."""
    tokens, loss = np.asarray(tokens, float), np.minimum.accumulate(np.asarray(loss, float))
    hit = np.flatnonzero(loss <= target)
    if len(hit) == 0:
        return float("nan")
    i = hit[0]
    if i == 0 or loss[i - 1] == loss[i]:
        return float(tokens[i])
    frac = (loss[i - 1] - target) / (loss[i - 1] - loss[i])
    return float(np.exp(np.log(tokens[i - 1]) + frac * (np.log(tokens[i]) - np.log(tokens[i - 1]))))


def optimum(batches, tokens) -> dict:
    """B_opt from T_B (NaN: not reached within the steps budget): the argmin, refined by a
    parabola in log B through its two neighbours. `limited_by` says what bounds an optimum that
    cannot be refined: "grid" (the best batch is the smallest or largest of the grid, so the
    optimum may lie beyond it) or "steps_budget" (the next batch down or up did not reach the
    loss within the steps budget); None when the parabola refined it."""
    b, t = np.asarray(batches, float), np.asarray(tokens, float)
    order = np.argsort(b)
    b, t = b[order], t[order]
    if np.isfinite(t).sum() == 0:
        return {"B_opt": float("nan"), "limited_by": "steps_budget", "grid_B": float("nan")}
    i = int(np.nanargmin(t))
    if i == 0 or i == len(b) - 1:
        return {"B_opt": float(b[i]), "limited_by": "grid", "grid_B": float(b[i])}
    if not (np.isfinite(t[i - 1]) and np.isfinite(t[i + 1])):
        return {"B_opt": float(b[i]), "limited_by": "steps_budget", "grid_B": float(b[i])}
    x, y = np.log(b[i - 1:i + 2]), np.log(t[i - 1:i + 2])
    a2, a1, _ = np.polyfit(x, y, 2)
    vertex = float(np.clip(-a1 / (2 * a2), x[0], x[2])) if a2 > 0 else float(x[1])
    return {"B_opt": float(np.exp(vertex)), "limited_by": None, "grid_B": float(b[i])}


def mccandlish(batches, tokens) -> dict:
    """S_min, E_min and B_crit = E_min / S_min from S_B = S_min + E_min / B (arXiv:1812.06162,
    eq. 2.11), least squares over the batches that reached the loss."""
    b, t = np.asarray(batches, float), np.asarray(tokens, float)
    keep = np.isfinite(t)
    if keep.sum() < 2:
        return {"S_min": float("nan"), "E_min": float("nan"), "B_crit": float("nan")}
    steps = t[keep] / b[keep]
    design = np.column_stack([np.ones(keep.sum()), 1.0 / b[keep]])
    (s_min, e_min), *_ = np.linalg.lstsq(design, steps, rcond=None)
    b_crit = e_min / s_min if s_min > 0 and e_min > 0 else float("nan")
    return {"S_min": float(s_min), "E_min": float(e_min), "B_crit": float(b_crit)}


def _within_budget(entry: dict, batches, tokens, steps_budget: int) -> dict:
    """For an optimum bounded by the steps budget (the next smaller batch did not reach the
    loss): the batch that reaches it in exactly `steps_budget` steps on McCandlish's line,
    B = E_min / (S_budget - S_min), kept between that failing batch and the grid optimum.
    The grid point alone would make B_opt(L) a staircase of the batch grid."""
    if entry["limited_by"] != "steps_budget":
        return {}
    b = np.sort(np.asarray(batches, float))
    i = int(np.searchsorted(b, entry["grid_B"]))
    s_min, e_min = entry["S_min"], entry["E_min"]
    if i == 0 or np.isfinite(dict(zip(batches, tokens, strict=True))[b[i - 1]]) \
            or not (math.isfinite(s_min) and 0 < s_min < steps_budget and e_min > 0):
        return {}
    crossing = float(np.clip(e_min / (steps_budget - s_min), b[i - 1], b[i]))
    return {"B_opt": crossing, "B_opt_method": "steps budget on the line S = S_min + E_min/B"}


def auto_losses(curves: pd.DataFrame, n: int, steps_budget: int) -> list[float]:
    """`n` levels evenly spaced in log L (see the module docstring)."""
    lowest, early = [], []
    for _, run in curves.groupby("batch_tokens"):
        running = np.minimum.accumulate(run["loss"].to_numpy(float))
        lowest.append(running[-1])
        quarter = run["step"].to_numpy() <= steps_budget / 4
        early.append(running[quarter][-1] if quarter.any() else running[0])
    lo = sorted(lowest)[1] * 1.001
    hi = max(early)
    if not hi > lo:
        raise UserError("the runs' losses do not span a range of levels "
                        "(raise critical_batch.steps or list critical_batch.losses)")
    return [float(v) for v in np.geomspace(hi, lo, n)]


def analyse(curves: pd.DataFrame, losses, *, steps_budget: int, n_losses: int = 6,
            n_boot: int = 1000, seed: int = 0) -> dict:
    """The content of `results/fits/critical_batch.json`."""
    from scalinglab.phases.hparams import fit_law

    targets = list(losses) or auto_losses(curves, n_losses, steps_budget)
    batches = sorted(curves["batch_tokens"].unique())
    levels = []
    for target in targets:
        reach = []
        for b in batches:
            run = curves[(curves["batch_tokens"] == b) & (curves["step"] <= steps_budget)]
            reach.append(tokens_to_reach(run["tokens"], run["loss"], target))
        entry = {"loss": float(target), "tokens": dict(zip(map(int, batches), reach, strict=True)),
                 "n_reached": int(np.isfinite(reach).sum())}
        if entry["n_reached"] >= 2:
            entry.update(optimum(batches, reach))
            entry.update(mccandlish(batches, reach))
            entry.update(_within_budget(entry, batches, reach, steps_budget))
        levels.append(entry)
    usable = [lv for lv in levels if lv["n_reached"] >= 2]
    inside = [lv for lv in usable if lv["limited_by"] != "grid"]
    fitted_on = inside if len(inside) >= 3 else usable
    law = fit_law([lv["loss"] for lv in fitted_on], [lv["B_opt"] for lv in fitted_on],
                  n_boot=n_boot, seed=seed)
    if "error" not in law:
        law["gamma"] = -law["exponent"]
        law["k"] = law["coef"]
        if law["ci"]:
            law["ci"]["gamma"] = sorted(-v for v in law["ci"]["exponent"])
    crit = [lv for lv in usable if math.isfinite(lv.get("B_crit", float("nan")))]
    b_crit_law = fit_law([lv["loss"] for lv in crit], [lv["B_crit"] for lv in crit],
                         n_boot=n_boot, seed=seed)
    for fit in (law, b_crit_law):
        fit.pop("samples", None)
    return {
        "criterion": "B_opt(L): the batch (tokens) reaching loss L with the fewest tokens within "
                     "the steps budget; parabola in log B through the best batch and its "
                     "neighbours",
        "form": "B_opt = k / L^gamma",
        "steps_budget": int(steps_budget),
        "batch_tokens": [int(b) for b in batches],
        "lr": float(curves["lr"].iloc[0]),
        "N": int(curves["N"].iloc[0]),
        "losses_chosen": "config" if list(losses) else "auto",
        "levels": levels,
        "law": law,
        "law_fitted_on": "optima not at an end of the grid" if fitted_on is inside
        else "all optima (fewer than 3 away from the ends of the grid)",
        "mccandlish": {"form": "B_crit = E_min / S_min; B_crit = k / L^gamma",
                       "law": b_crit_law},
    }
