"""WSD with rewind-decay branches against cosine runs tuned to each budget.

MiniCPM (arXiv:2404.06395, Sec. 4.1) and Hägele et al. (arXiv:2405.18392) show that one
warmup-stable-decay run, decayed from checkpoints of its stable phase, matches a cosine run tuned
to each budget at a fraction of the compute: m cosine runs cost the sum of the budgets, WSD costs
one stable run to the largest budget's decay start plus m short decays. This phase measures both
on the study's corpus, for each size in `wsd_vs_cosine.sizes` and each peak LR (`training.lr`,
or every LR of `wsd_vs_cosine.lr_grid` to tune both schedules per budget,
`scalinglab.phases.wsd_vs_cosine_tuned`):

- a WSD series: one stable run and a branch for every (budget, decay fraction, decay shape) of
  the config (the decay-fraction and decay-shape ablations cost only their decays, since every
  branch starts from a checkpoint of the same stable run);
- a cosine series: one run per budget from the initialisation, warmup then a half cosine to
  `cosine_final_lr_ratio` of the peak (0.1, the Chinchilla baseline Hägele et al. compare with).

The main comparison uses the first decay fraction and the first shape listed.
`compute_saving_ratio` = training FLOPs of the cosine runs / those of the main WSD variant (its
stable run up to its last branch point plus its branches' decays); each ablation variant gets its
own ratio the same way. The gap per budget is (L_WSD - L_cosine) / L_cosine of final validation
losses, each side at its grid-best LR for that budget when there is a grid.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd

from scalinglab.config import SizeConfig
from scalinglab.errors import UserError
from scalinglab.model.flops import model_counts
from scalinglab.phases import runs as phase_runs
from scalinglab.phases import study
from scalinglab.training.spec import RunSpec

PHASE = "wsd_vs_cosine"
WSD_PREFIX = "wvc-wsd"
COSINE_PREFIX = "wvc-cos"


def variant_label(budget: float, fraction: float, shape: str) -> str:
    """e.g. C1e12-f0.1-1-sqrt: budget, decay fraction, decay shape."""
    return f"{study.budget_label(budget)}-f{fraction:g}-{shape}"


def _series(cfg, prefix: str, size, lr: float) -> str:
    sid = study.series_id(cfg.parametrization.name, size, lr, cfg.training.batch_size)
    return f"{prefix}-{sid}"


def lrs(cfg) -> tuple[float, ...]:
    """The peak LRs each schedule trains at: `lr_grid`, or `training.lr` alone (untuned)."""
    return cfg.wsd_vs_cosine.lr_grid or (cfg.training.lr,)


def _cosine_cfg(cfg, size, lr: float):
    wc = cfg.wsd_vs_cosine
    schedule = replace(cfg.schedule, kind="cosine", final_lr_ratio=wc.cosine_final_lr_ratio)
    return phase_runs.run_config(cfg, size=size, lr=lr, eval_every=wc.eval_every,
                                 schedule=schedule)


def _wsd_cfg(cfg, size, lr: float, fraction: float | None = None, shape: str | None = None):
    wc = cfg.wsd_vs_cosine
    main_fraction, main_shape = wc.main
    schedule = replace(cfg.schedule, kind="wsd", decay_fraction=fraction or main_fraction,
                       decay_shape=shape or main_shape)
    return phase_runs.run_config(cfg, size=size, lr=lr, eval_every=wc.eval_every,
                                 schedule=schedule)


def plan(cfg) -> pd.DataFrame:
    """Rows for every WSD branch and every cosine run, in `study.plan_isoflop`'s layout plus
    `kind` (wsd | cosine), `decay_fraction`, `decay_shape` and `main`; empty when off. Per size
    and LR (`lrs`): one WSD series (a stable run, a branch per budget x fraction x shape) and one
    cosine series (a run per budget), so tuning costs WSD one stable run per LR and cosine one
    run per (budget, LR)."""
    wc = cfg.wsd_vs_cosine
    if not wc.enabled:
        return pd.DataFrame()
    rows = []
    for size in wc.sizes:
        fpt = model_counts(study.gpt_config(cfg, size), cfg.flops.convention).flops_per_token
        for lr in lrs(cfg):
            rows += _rows_at(cfg, size, float(lr), fpt)
    table = phase_runs.finish(rows)
    if table["run_id"].duplicated().any():
        raise UserError("wsd_vs_cosine.lr_grid: two learning rates give the same run id; "
                        "space them further apart")
    return table


def _rows_at(cfg, size, lr: float, fpt: float) -> list[dict]:
    """The cosine runs and WSD branches of one size at one peak LR."""
    wc = cfg.wsd_vs_cosine
    cos_cfg = _cosine_cfg(cfg, size, lr)
    cos_id, wsd_id = _series(cfg, COSINE_PREFIX, size, lr), _series(cfg, WSD_PREFIX, size, lr)
    rows = []
    for i, budget in enumerate(wc.budgets):
        key = f"wsd_vs_cosine.budgets[{i}]"
        steps = phase_runs.steps_for(budget, fpt, study.batch_tokens(cfg))
        if steps <= study.warmup_steps(cfg):
            raise UserError(f"{key}: budget {budget:.3g} gives {steps} steps for size "
                            f"{study.size_label(size)}, no more than the warmup of "
                            f"{study.warmup_steps(cfg)} steps; raise the budget")
        rows.append(phase_runs.branch_row(
            cos_cfg, phase=PHASE, series_id=cos_id, label=study.budget_label(budget), size=size,
            steps=steps, decay_start=0, C=float(budget), kind="cosine",
            decay_fraction=float("nan"), decay_shape="cosine", main=True))
        for fraction in wc.decay_fractions:
            for shape in wc.decay_shapes:
                run_cfg = _wsd_cfg(cfg, size, lr, fraction, shape)
                label = variant_label(budget, fraction, shape)
                start = phase_runs.wsd_decay_start(run_cfg, steps, key, f"{wsd_id}_{label}")
                rows.append(phase_runs.branch_row(
                    run_cfg, phase=PHASE, series_id=wsd_id, label=label, size=size,
                    steps=steps, decay_start=start, C=float(budget), kind="wsd",
                    decay_fraction=float(fraction), decay_shape=shape,
                    main=(fraction, shape) == wc.main))
    return rows


def series_spec(cfg, table: pd.DataFrame, sid: str) -> RunSpec:
    """The spec of a WSD or cosine series; WSD branches carry their own decay shape."""
    rows = table[table["series_id"] == sid]
    if rows.empty:
        raise UserError(f"unknown wsd_vs_cosine series {sid!r}")
    first = rows.iloc[0]
    size = SizeConfig(int(first.n_layer), int(first.n_embd), int(first.n_head))
    lr = float(first.lr)
    run_cfg = _cosine_cfg(cfg, size, lr) if first.kind == "cosine" else _wsd_cfg(cfg, size, lr)
    spec = study.series_spec(run_cfg, rows, sid)
    if first.kind == "wsd":
        shapes = dict(zip(rows["label"], rows["decay_shape"], strict=True))
        spec = replace(spec, branches=tuple(replace(b, decay_shape=str(shapes[b.label]))
                                            for b in spec.branches))
    return spec


# -- analysis -------------------------------------------------------------------------------------
def variant_flops(table: pd.DataFrame, kind: str, fraction=None, shape=None) -> float:
    """Training FLOPs of one variant over every size: for WSD, each size's stable run up to the
    variant's last branch point plus the variant's decays; for cosine, every run in full."""
    rows = table[table["kind"] == kind]
    if kind == "cosine":
        return float(rows["C_actual"].sum())
    rows = rows[np.isclose(rows["decay_fraction"], fraction) & (rows["decay_shape"] == shape)]
    total = 0.0
    for _, series in rows.groupby("series_id"):
        per_step = series["batch_tokens"] * series["flops_per_token"]
        total += float(series["decay_start"].max() * per_step.iloc[0])
        total += float(((series["steps"] - series["decay_start"]) * per_step).sum())
    return total


def read_finals(table: pd.DataFrame, run_jsons) -> pd.DataFrame:
    """The plan's rows with the final validation loss of each run added (`loss`)."""
    import json
    from pathlib import Path

    losses = {}
    for path in run_jsons:
        try:
            record = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise UserError(f"{path}: missing run output") from None
        if record.get("kind") == "branch":
            loss = record.get("final_val_loss")
            losses[record["run_id"]] = float("nan") if loss is None else float(loss)
    finals = table.copy()
    finals["loss"] = finals["run_id"].map(losses)
    missing = finals[finals["loss"].isna() & ~finals["run_id"].isin(losses)]
    if not missing.empty:
        raise UserError(f"wsd-vs-cosine: no run.json given for {missing['run_id'].iloc[0]}")
    return finals


def grid_best(finals: pd.DataFrame) -> pd.Series:
    """True at the row of lowest final loss among the LRs of each size, schedule, WSD variant and
    budget (every row when untuned: one LR each); NaN losses lose, ties go to the lower LR."""
    keys = ["n_layer", "n_embd", "kind", "decay_fraction", "decay_shape", "C"]
    order = finals.assign(_loss=finals["loss"].fillna(np.inf)).sort_values(
        ["_loss", "lr"], kind="stable")
    return pd.Series(finals.index.isin(order.drop_duplicates(keys).index), index=finals.index)


def analyse(finals: pd.DataFrame) -> dict:
    """The content of `results/fits/wsd_vs_cosine.json` from `read_finals`' table. Each gap pairs
    the grid-best LR of each schedule (`grid_best`); FLOPs count every LR trained."""
    picked = finals[grid_best(finals)]
    wsd = picked[picked["kind"] == "wsd"]
    cos_rows = picked[picked["kind"] == "cosine"].set_index(["n_embd", "n_layer", "C"])
    cos = cos_rows["loss"]
    main = wsd[wsd["main"]].iloc[0]
    main_fraction, main_shape = float(main["decay_fraction"]), str(main["decay_shape"])
    cosine_flops = variant_flops(finals, "cosine")
    variants = []
    for (fraction, shape), rows in wsd.groupby(["decay_fraction", "decay_shape"], sort=False):
        gaps = []
        for row in rows.itertuples():
            ref = cos[(row.n_embd, row.n_layer, row.C)]
            gaps.append({"size": f"l{row.n_layer}-d{row.n_embd}-h{row.n_head}", "N": int(row.N),
                         "C": float(row.C), "D": int(row.D), "cosine_loss": float(ref),
                         "wsd_loss": float(row.loss),
                         "gap_rel": float((row.loss - ref) / ref), "wsd_lr": float(row.lr),
                         "cosine_lr": float(cos_rows["lr"][(row.n_embd, row.n_layer, row.C)])})
        flops = variant_flops(finals, "wsd", fraction, shape)
        rel = [g["gap_rel"] for g in gaps if math.isfinite(g["gap_rel"])]
        variants.append({
            "decay_fraction": float(fraction), "decay_shape": str(shape),
            "main": bool(math.isclose(fraction, main_fraction) and shape == main_shape),
            "flops": flops, "compute_saving_ratio": cosine_flops / flops,
            "mean_gap_rel": float(np.mean(rel)) if rel else float("nan"),
            "max_abs_gap_rel": float(np.max(np.abs(rel))) if rel else float("nan"),
            "gaps": gaps,
        })
    main_variant = next(v for v in variants if v["main"])
    every = finals[finals["kind"] == "wsd"]
    every_wsd = sum(phase_runs.series_flops(finals, sid) for sid in every["series_id"].unique())
    every_wsd += float(((every["steps"] - every["decay_start"]) * every["batch_tokens"]
                        * every["flops_per_token"]).sum())
    return {
        "definition": "compute_saving_ratio = training FLOPs of the cosine runs / training FLOPs "
                      "of the WSD stable run (to the variant's last branch point) plus the "
                      "variant's decay branches, summed over sizes; gap_rel = (L_wsd - L_cos) / "
                      "L_cos of final validation losses",
        "main": {"decay_fraction": main_fraction, "decay_shape": main_shape},
        "compute_saving_ratio": main_variant["compute_saving_ratio"],
        "flops": {"cosine": cosine_flops, "wsd": main_variant["flops"],
                  "wsd_with_every_ablation_branch": every_wsd},
        "gap_per_budget": main_variant["gaps"],
        "mean_gap_rel": main_variant["mean_gap_rel"],
        "max_abs_gap_rel": main_variant["max_abs_gap_rel"],
        "ablations": {
            "decay_fraction": [v for v in variants if v["decay_shape"] == main_shape],
            "decay_shape": [v for v in variants
                            if math.isclose(v["decay_fraction"], main_fraction)],
            "all": [{k: v[k] for k in ("decay_fraction", "decay_shape", "compute_saving_ratio",
                                       "mean_gap_rel", "max_abs_gap_rel")} for v in variants],
        },
    }
