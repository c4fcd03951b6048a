"""The loss under the LR schedule, per size: the Multi-Power Law (Luo et al., arXiv 2503.12811)
fitted on each IsoFLOP series' stable run and its trained decay branches.

It trains nothing: it reads the spine's curves. Two uses:
- a check of every branch: the robust (Huber) fit of all of a series' curves gives each
  branch's in-sample error, and the law fitted on the series' other curves predicts its final
  loss (leave one out); a branch the law cannot fit or predict is worth looking at;
- the LR table the law needs, written from the specs: the trainer's schedule is a pure function
  of its spec, so the table is exact and any `fit schedule` call can reuse it.

Step convention: the trainer applies factor `schedule(k)` on update k = 0, 1, ... and evaluates
after `step` updates; the law's eta_i (i >= 1) is the LR of the i-th update, so
lr[i] = peak * schedule(i - 1), and lr[0] = lr[1] adds no drop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from scalinglab.errors import UserError
from scalinglab.fitting.schedule_fit import ScheduleFitError, fit_schedule_law, refit_without
from scalinglab.fitting.schedule_law import Curve, predict, relative_errors
from scalinglab.phases.base import FIRST, STUDY_SPEC, Phase, Step, group_named
from scalinglab.phases.isoflop import round_file
from scalinglab.training.metrics import RUN_COLUMNS
from scalinglab.training.schedule import Schedule

FIT = "results/fits/schedule_law.json"
FIGURE = "results/figures/schedule_law.png"
LR_TABLE = "results/schedule_law/lr.csv"
PREDICTED = "results/schedule_law/predicted_runs.csv"


def run_schedule(spec: dict, branch: dict | None = None) -> tuple[Schedule, int]:
    """The schedule of a series' stable run (`branch=None`) or of one of its branches, and the
    run's last step."""
    sched = spec["schedule"]
    warmup = int(spec["warmup_steps"])
    if branch is None:
        steps = int(spec["stable_steps"])
        return Schedule(kind="wsd", warmup_steps=warmup, total_steps=max(steps, 1)), steps
    total = int(branch["total_steps"])
    if sched["kind"] == "cosine":
        return Schedule(kind="cosine", warmup_steps=warmup, total_steps=total,
                        final_ratio=sched["final_lr_ratio"]), total
    shape = branch.get("decay_shape") or sched["decay_shape"]
    return Schedule(kind="wsd", warmup_steps=warmup, total_steps=total,
                    decay_start=int(branch["decay_start"]), shape=shape,
                    final_ratio=sched["final_lr_ratio"]), total


def lr_trace(spec: dict, branch: dict | None = None) -> np.ndarray:
    """The law's LR array for steps 0..T of a run (see the module docstring)."""
    schedule, steps = run_schedule(spec, branch)
    peak = float(spec["training"]["lr"])
    applied = np.array([peak * schedule(k) for k in range(steps)], float)
    return np.concatenate([applied[:1], applied]) if steps else np.zeros(1)


def series_curves(curves: pd.DataFrame, spec: dict) -> list[Curve]:
    """The stable run's curve and each trained branch's: a branch continues the stable curve
    up to its decay start (a cosine run has only its own points)."""
    rows = curves[(curves["series_id"] == spec["series_id"]) & ~curves["diverged"].astype(bool)]
    stable = rows[rows["kind"] == "stable"].sort_values("step")
    stable = stable[stable["step"] >= 1]
    out = []
    if len(stable):
        out.append(Curve(lr_trace(spec), stable["step"].to_numpy(), stable["loss"].to_numpy(),
                         name="stable"))
    for branch in spec["branches"]:
        own = rows[(rows["kind"] == "branch") & (rows["label"] == branch["label"])]
        if not branch["trained"] or own.empty:
            continue
        start = int(branch["decay_start"])
        before = stable[stable["step"] <= start] if start else stable.iloc[:0]
        points = pd.concat([before, own[own["step"] > start]]).sort_values("step")
        points = points.drop_duplicates("step", keep="last")
        out.append(Curve(lr_trace(spec, branch), points["step"].to_numpy(),
                         points["loss"].to_numpy(), name=str(branch["label"])))
    return out


def lr_table(specs: list[dict]) -> pd.DataFrame:
    """(run, step, lr) for every update of every stable run and trained branch: `fit schedule`'s
    --lr table, with run ids as in curves.csv."""
    frames = []
    for spec in specs:
        runs = [(f"{spec['series_id']}_stable", None)]
        runs += [(b["run_id"], b) for b in spec["branches"] if b["trained"]]
        for run_id, branch in runs:
            lr = lr_trace(spec, branch)
            frames.append(pd.DataFrame({"run": run_id, "step": np.arange(len(lr)), "lr": lr}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["run", "step", "lr"])


def _final_error(fit, curve: Curve) -> dict:
    pred = predict(fit.form, fit.params, curve.lr, curve.steps)
    mean, final = relative_errors(pred, curve.loss)
    return {"final_loss": float(curve.loss[-1]), "predicted": float(pred[-1]),
            "final_rel_error": final, "mean_rel_error": mean}


def analyse(curves: pd.DataFrame, specs: list[dict]) -> dict:
    """Per series: the law fitted on all its curves, and each branch's leave-one-out error on
    its final loss (the law refitted on the other curves, from the series' fit:
    `refit_without`). A series with too few curves to leave one out (fewer than three) reports
    the in-sample errors only."""
    sizes = []
    for spec in sorted(specs, key=lambda s: s["N"]):
        fitted = series_curves(curves, spec)
        if not fitted:
            continue
        try:
            fit = fit_schedule_law(fitted)
        except ScheduleFitError as err:
            sizes.append({"series_id": spec["series_id"], "N": spec["N"], "error": str(err)})
            continue
        branches = {}
        for i, curve in enumerate(fitted):
            if curve.name == "stable":
                continue
            row = {"in_sample": _final_error(fit, curve)}
            if len(fitted) >= 3:
                try:
                    row["leave_one_out"] = _final_error(refit_without(fitted, fit, i), curve)
                except ScheduleFitError as err:
                    row["leave_one_out"] = {"error": str(err)}
            branches[curve.name] = row
        sizes.append({"series_id": spec["series_id"], "N": spec["N"], "params": fit.params,
                      "n_curves": fit.n_curves, "n_points": fit.n_points,
                      "branches": branches})
    if not sizes:
        raise UserError("schedule law: no series has a curve to fit (are the runs finished?)")
    loo = [b["leave_one_out"]["final_rel_error"] for s in sizes
           for b in s.get("branches", {}).values()
           if "final_rel_error" in b.get("leave_one_out", {})]
    return {
        "form": "mpl",
        "method": "Multi-Power Law (arXiv 2503.12811) per series, Huber (delta 1e-3) on log "
                  "loss; each branch's final loss predicted from the series' other curves",
        "sizes": sizes,
        "leave_one_out_final_rel_error": {
            "n": len(loo), "median": float(np.median(loo)) if loo else None,
            "max": float(np.max(loo)) if loo else None},
    }


def law_error(size: dict) -> float | None:
    """A series' typical error on a final loss it did not see: the root mean square of its
    branches' leave-one-out errors (None when it has none)."""
    errors = [b["leave_one_out"]["final_rel_error"] for b in size.get("branches", {}).values()
              if "final_rel_error" in b.get("leave_one_out", {})]
    return float(np.sqrt(np.mean(np.square(errors)))) if errors else None


def unpredictable_series(fit: dict, specs: list[dict], table: pd.DataFrame) -> dict[str, str]:
    """The series of `table`'s open rows that `predict_runs` leaves out, each with why: no fitted
    law, no spec, or no trained branch to measure the law's error on (a prediction must come
    with an error, or it would weigh in the IsoFLOP fit as much as a trained loss)."""
    fitted = {s["series_id"]: s for s in fit["sizes"]}
    have_spec = {spec["series_id"] for spec in specs}
    why = {}
    for sid in sorted(set(table.loc[table["reason"] == "", "series_id"])):
        size = fitted.get(sid)
        if size is None or "params" not in size:
            why[sid] = "the schedule law was not fitted on it" + (
                f" ({size['error']})" if size and "error" in size else "")
        elif sid not in have_spec:
            why[sid] = "no spec was given for it"
        elif law_error(size) is None:
            why[sid] = "no trained branch measures the law's error on it (leave-one-out)"
    return why


def predict_runs(fit: dict, specs: list[dict], table: pd.DataFrame) -> pd.DataFrame:
    """runs.csv rows (`loss_source` "predicted") for the branches of `table` that train
    nothing (`study.plan_predicted`): each final loss is the law of its series, fitted on that
    series' trained curves, at the end of the branch's own schedule. `predicted_rel_error` is
    the series' `law_error`. The series of `unpredictable_series` predict nothing."""
    by_series = {s["series_id"]: s for s in fit["sizes"] if "params" in s}
    specs = {spec["series_id"]: spec for spec in specs}
    left_out = unpredictable_series(fit, list(specs.values()), table)
    rows = []
    for row in table[table["reason"] == ""].itertuples():
        if row.series_id in left_out:
            continue
        size, spec = by_series[row.series_id], specs[row.series_id]
        branch = {"total_steps": int(row.steps), "decay_start": int(row.decay_start)}
        loss = predict(fit["form"], size["params"], lr_trace(spec, branch), [int(row.steps)])
        rows.append({
            "run_id": row.run_id, "series_id": row.series_id, "label": row.label,
            "parametrization": row.parametrization, "n_layer": row.n_layer,
            "n_embd": row.n_embd, "n_head": row.n_head, "N": row.N, "N_total": row.N_total,
            "D": row.D, "C": row.C, "loss": float(loss[-1]), "diverged": False,
            "schedule": row.schedule, "lr": row.lr, "batch_size": row.batch_size,
            "steps": row.steps, "seed": row.seed, "round": 0, "loss_source": "predicted",
            "predicted_rel_error": law_error(size),
        })
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


@dataclass(frozen=True)
class ScheduleLaw(Phase):
    """Trains nothing: it fits the spine's curves, so it is on whenever the spine is."""

    name: str = "schedule_law"

    def targets(self, cfg):
        return [FIT, FIGURE, LR_TABLE] + ([PREDICTED] if cfg.isoflop.predicted_budgets else [])

    def steps(self, cfg, groups):
        spine = group_named(groups, "isoflop")
        specs = [spine.spec_file(sid) for sid in spine.series]
        return [
            # the first grid's curves, not metrics/curves.csv: runs.csv takes the predicted
            # budgets from this fit
            Step("fit_schedule_law", "schedule-law fit --curves {input.curves} --specs"
                 " {input.specs} --out {output.fit} --lr-out {output.lr} --figure {output.figure}",
                 inputs={"curves": round_file(0, "curves.csv"), "specs": specs},
                 outputs={"fit": FIT, "lr": LR_TABLE},
                 figures={"figure": (FIGURE, "schedule_law.rst", "Schedules")},
                 # about 90 s in the default study, ready with the refinement round: beside its
                 # training, not after it
                 priority=FIRST),
            Step("predict_budgets", "schedule-law predict --fit {input.fit} --specs {input.specs}"
                 " --config {input.spec} --out {output.predicted}",
                 inputs={"fit": FIT, "specs": specs, "spec": STUDY_SPEC},
                 outputs={"predicted": PREDICTED}),
        ]


def prediction_panels(curves: pd.DataFrame, specs: list[dict], fit: dict) -> list[dict]:
    """What the figure draws: per series, each curve's points and the law's prediction at every
    step from the first evaluation on (the fit in `fit`, `analyse`'s output)."""
    by_series = {s["series_id"]: s for s in fit["sizes"] if "params" in s}
    panels = []
    for spec in sorted(specs, key=lambda s: s["N"]):
        size = by_series.get(spec["series_id"])
        if size is None:
            continue
        lines = []
        starts = {str(b["label"]): int(b["decay_start"]) for b in spec["branches"]}
        for curve in series_curves(curves, spec):
            # a branch is drawn from its decay start: before it, it is the stable curve
            first = starts.get(curve.name, 0) + 1
            own = curve.steps >= first
            steps = np.arange(max(first, int(curve.steps[0])), int(curve.steps[-1]) + 1)
            lines.append({"name": curve.name, "steps": curve.steps[own], "loss": curve.loss[own],
                          "pred_steps": steps,
                          "pred": predict(fit["form"], size["params"], curve.lr, steps)})
        panels.append({"title": f"{spec['series_id']} (N={spec['N']:,})", "lines": lines})
    return panels
