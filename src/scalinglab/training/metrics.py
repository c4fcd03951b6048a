"""Metric extraction: the runs' `run.json` and `metrics.jsonl` files into two tidy tables.

- `runs.csv`: one row per finished branch (the final validation loss of a (size, budget) run),
  the input of the IsoFLOP fit, and with its downstream `accuracy` and `chance` that of the
  downstream fit. A run that diverged (`scalinglab.training.divergence`) keeps its row, marked
  `diverged`, with NaN loss and accuracy: a failed point that every fit leaves out.
- `curves.csv`: every evaluation of every stable run and branch (a long table), the input of the
  loss-curve figure and of the lower-envelope fit (Chinchilla Method 1).
Nothing here reads stdout or logs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from scalinglab.errors import UserError
from scalinglab.training.spec import RunSpec

RUN_COLUMNS = [
    "run_id", "series_id", "label", "parametrization", "n_layer", "n_embd", "n_head", "N",
    "N_total", "D", "C", "loss", "diverged", "schedule", "lr", "batch_size", "steps",
    "wall_seconds", "accuracy", "chance", "seed", "round", "loss_source", "predicted_rel_error",
]
# a runs.csv row's loss: a trained branch's, or one the schedule law predicted for a budget that
# trains nothing (isoflop.predicted_budgets); only the IsoFLOP fit's `with_predicted` reads those
TRAINED, PREDICTED = "trained", "predicted"


def _read_run(run_json: Path) -> tuple[dict, list[dict]]:
    try:
        record = json.loads(run_json.read_text())
        lines = (run_json.parent / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError as err:
        raise UserError(f"{err.filename}: missing run output") from None
    return record, [json.loads(line) for line in lines if line.strip()]


def run_row(record: dict) -> dict:
    spec = RunSpec.from_dict(record["spec"], where=f"run {record.get('run_id')}: spec")
    model = spec.model
    diverged = bool(record.get("diverged", False))
    loss = record["final_val_loss"]
    return {
        "run_id": record["run_id"],
        "series_id": spec.series_id,
        "label": record["label"],
        "parametrization": spec.parametrization["name"],
        "n_layer": model["n_layer"],
        "n_embd": model["n_embd"],
        "n_head": model["n_head"],
        "N": spec.N,
        "N_total": spec.N_total,
        "D": record["D"],
        "C": record["C"],
        "loss": float("nan") if diverged or loss is None else float(loss),
        "diverged": diverged,
        "schedule": spec.schedule_name,
        "lr": spec.training["lr"],
        "batch_size": spec.training["batch_size"],
        "steps": record["steps"],
        "wall_seconds": record["wall_seconds"],
        # the downstream accuracy (scalinglab.training.downstream): NaN when off, absent or diverged
        "accuracy": _number(None if diverged else record.get("final_accuracy")),
        "chance": _number(record.get("accuracy_chance")),
        "seed": spec.seed,
        # the IsoFLOP round that added the run (phases.isoflop_rounds); 0: the first grid
        "round": spec.round or 0,
        "loss_source": TRAINED,
        "predicted_rel_error": float("nan"),
    }


def trained_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """The rows of a runs table whose loss was trained (all of a table from before
    `loss_source`)."""
    if "loss_source" not in runs.columns:
        return runs
    return runs[runs["loss_source"].fillna(TRAINED) == TRAINED]


def with_predicted(runs: pd.DataFrame, predicted: pd.DataFrame | None,
                   where: str = "predicted runs") -> pd.DataFrame:
    """runs.csv: the trained runs, then the predicted ones, in (C, N) order."""
    if predicted is None or predicted.empty:
        return runs
    missing = [col for col in RUN_COLUMNS if col not in predicted.columns]
    if missing:
        raise UserError(f"{where}: no column(s) {', '.join(missing)} (write it with "
                        "`scalinglab schedule-law predict`)")
    both = pd.concat([runs, predicted[RUN_COLUMNS]], ignore_index=True)
    return both.sort_values(["C", "N"], kind="stable").reset_index(drop=True)


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def collect(stable_jsons: list[Path], branch_jsons: list[Path]) -> tuple[pd.DataFrame,
                                                                         pd.DataFrame]:
    """Return (runs, curves) from the run.json files of stable runs and branches."""
    runs, curves = [], []
    for kind, paths in (("stable", stable_jsons), ("branch", branch_jsons)):
        for path in paths:
            record, rows = _read_run(Path(path))
            spec = RunSpec.from_dict(record["spec"], where=f"{path}: spec")
            run_id = record["run_id"] if kind == "branch" else f"{spec.series_id}_stable"
            if kind == "branch":
                runs.append(run_row(record))
            for row in rows:
                curves.append({
                    "run_id": run_id, "series_id": spec.series_id, "kind": kind,
                    "label": record.get("label", "stable"), "N": spec.N, "step": row["step"],
                    "D": row["tokens"], "C": row["flops"], "lr": row["lr"],
                    "train_loss": row["train_loss"], "loss": row["val_loss"],
                    "elapsed": row["elapsed"], "diverged": bool(row.get("diverged", False)),
                })
    runs_df = pd.DataFrame(runs, columns=RUN_COLUMNS).sort_values(["C", "N"])
    curves_df = pd.DataFrame(curves)
    return runs_df.reset_index(drop=True), curves_df
