"""Run tables and specs for the hyperparameter, schedule and validation phases.

Every phase here trains through the spine's `train stable` / `train branch` verbs, so its runs are
rows in the column layout of `study.plan_isoflop` (one row per decay branch, grouped into series
by `series_id`), and `study.series_spec` turns a series into the spec file those verbs read. This
module holds what the phases share: the per-run view of the study config, one branch row, a
table's FLOPs. What the rules ask of a phase is its `phases.base.TrainingGroup`s; the phases'
config sections are in `scalinglab.config`.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd

from scalinglab.errors import UserError
from scalinglab.model.flops import model_counts
from scalinglab.phases import study
from scalinglab.training.schedule import decay_start_step


def batch_size_of(batch_tokens: int, block_size: int, key: str) -> int:
    """Sequences per step for a batch given in tokens; it must be whole sequences."""
    if batch_tokens % block_size:
        raise UserError(f"{key}: {batch_tokens} tokens is not a multiple of "
                        f"model.block_size={block_size}")
    return batch_tokens // block_size


def run_config(cfg, *, size=None, lr: float | None = None, batch_size: int | None = None,
               seed: int | None = None, eval_every: int | None = None,
               eval_tokens: int | None = None, schedule=None):
    """The study config as one run of a phase sees it (its size, LR, batch, seed, evals)."""
    training = cfg.training
    for key, value in (("lr", lr), ("batch_size", batch_size), ("eval_every", eval_every),
                       ("eval_tokens", eval_tokens)):
        if value is not None:
            training = replace(training, **{key: value})
    return replace(
        cfg,
        seed=cfg.seed if seed is None else int(seed),
        model=cfg.model if size is None else replace(cfg.model, sizes=(size,)),
        training=training,
        schedule=cfg.schedule if schedule is None else schedule,
    )


def branch_row(cfg, *, phase: str, series_id: str, label: str, size, steps: int,
               decay_start: int, **extra) -> dict:
    """One decay branch in `study.plan_isoflop`'s layout under the run's own config `cfg`
    (see `run_config`). `stable_steps` and `reason` are filled in per series by `finish`."""
    counts = model_counts(study.gpt_config(cfg, size), cfg.flops.convention)
    tokens = steps * study.batch_tokens(cfg)
    return {
        "phase": phase, "series_id": series_id, "label": label,
        "run_id": f"{series_id}_{label}", "parametrization": cfg.parametrization.name,
        "n_layer": size.n_layer, "n_embd": size.n_embd, "n_head": size.n_head,
        "lr": float(cfg.training.lr), "batch_size": cfg.training.batch_size,
        "batch_tokens": study.batch_tokens(cfg), "seed": cfg.seed,
        "schedule": study.schedule_name(cfg), "N": counts.N, "N_total": counts.N_total,
        "flops_per_token": counts.flops_per_token, "C": counts.flops_per_token * tokens,
        "C_actual": counts.flops_per_token * tokens, "D": tokens, "steps": steps,
        "decay_start": decay_start, "warmup_steps": study.warmup_steps(cfg), **extra,
    }


def finish(rows: list[dict]) -> pd.DataFrame:
    """A table from branch rows: `reason` defaults to "" (trained) and each series' stable run
    trains to its last trained branch point, as in `study.plan_isoflop`."""
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    if "reason" not in table:
        table["reason"] = ""
    table["reason"] = table["reason"].fillna("")
    starts = table["decay_start"].where(table["reason"] == "", 0)
    table["stable_steps"] = starts.groupby(table["series_id"]).transform("max")
    return table


def wsd_decay_start(cfg, steps: int, key: str, run_id: str) -> int:
    """Decay start of a `steps`-step WSD run under `cfg`'s schedule; a decay inside the warmup
    is a UserError naming `key` (the config key that sets the run's length)."""
    start = decay_start_step(steps, cfg.schedule.decay_fraction, cfg.schedule.decay_shape)
    warmup = study.warmup_steps(cfg)
    if start < warmup:
        raise UserError(f"{key}: run {run_id} has {steps} steps and would decay from step "
                        f"{start}, inside the warmup of {warmup} steps "
                        f"(training.warmup_tokens); raise the budget")
    return start


def steps_for(budget: float, flops_per_token: float, batch_tokens: int) -> int:
    return round(budget / (flops_per_token * batch_tokens))



def series_flops(table: pd.DataFrame, sid: str) -> float:
    rows = table[table["series_id"] == sid]
    first = rows.iloc[0]
    return float(first["stable_steps"] * first["batch_tokens"] * first["flops_per_token"])


def phase_flops(table: pd.DataFrame) -> dict:
    """Training FLOPs of a table: stable runs, decay branches and their sum."""
    if table.empty:
        return {"stable": 0.0, "branches": 0.0, "total": 0.0}
    trained = table[table["reason"] == ""]
    stable = sum(series_flops(table, sid) for sid in trained["series_id"].unique())
    decays = ((trained["steps"] - trained["decay_start"]) * trained["batch_tokens"]
              * trained["flops_per_token"]).sum()
    return {"stable": float(stable), "branches": float(decays), "total": float(stable + decays)}


def finished_run(path) -> tuple[dict, float]:
    """A finished run's run.json and its final validation loss (NaN when it has none)."""
    try:
        record = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: missing run output") from None
    loss = record.get("final_val_loss")
    return record, float("nan") if loss is None else float(loss)
