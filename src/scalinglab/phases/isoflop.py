"""The spine: the IsoFLOP grid, one WSD stable run per size and a decay branch per budget
(`study.plan_isoflop`), collected into runs.csv and fitted by the law library; then the
refinement rounds (`isoflop_rounds`), each planned by a checkpoint from the fit before it."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pandas as pd

from scalinglab import atomic
from scalinglab.phases import isoflop_rounds, study
from scalinglab.phases.base import Phase, Step, TrainingGroup
from scalinglab.phases.runs import phase_flops

ROUNDS_DIR = "results/isoflop"

FIGURES = [
    "results/figures/loss_curves.png",
    "results/figures/isoflop.png",
    "results/figures/compute_optimal.png",
]


@dataclass(frozen=True)
class Isoflop(Phase):
    name: str = study.ISOFLOP_PHASE
    section: str = "isoflop"

    def enabled(self, cfg) -> bool:
        return True  # the spine of every study

    def plan(self, cfg):
        return study.plan_isoflop(cfg)

    def series_spec(self, cfg, table, sid):
        return study.series_spec(cfg, table, sid)

    def groups(self, cfg):
        # the stable runs wait for the epoch check of plan_study; data parallel when configured
        table = self.plan(cfg)
        first = self.group(cfg, table, threads=None, plan="results/study/plan.csv")
        labels = pd.DataFrame({"label": list(dict.fromkeys(table["label"])),
                               "reason": "planned by the round's checkpoint", "series_id": ""})
        return [first] + [
            TrainingGroup(round_name(r), f"results/runs/{round_name(r)}",
                          round_specs_dir(r), labels, None, threads=None,
                          plan=round_file(r, "plan.csv"), dynamic=True)
            for r in range(1, isoflop_rounds.round_count(cfg) + 1)
        ]

    def targets(self, cfg):
        return ["results/metrics/runs.csv", "results/fits/isoflop.json", *FIGURES]

    def steps(self, cfg, groups):
        # the IsoFLOP profiles with each budget's interval in words (the caption includes
        # them), the laws N_opt(C), D_opt(C) of Methods 2 and 3, and the loss curves
        fit, runs = "results/fits/isoflop.json", "results/metrics/runs.csv"
        sizing = "Compute-optimal sizing"
        return [
            Step("plot_loss_curves", "isoflop plot loss-curves --curves {input.curves}"
                 " --out {output.figure}", inputs={"curves": "results/metrics/curves.csv"},
                 figures={"figure": (FIGURES[0], "loss_curves.rst", "Training")}),
            Step("plot_isoflop", "isoflop plot isoflop --runs {input.runs} --fit {input.fit}"
                 " --out {output.figure} --words-out {output.words}",
                 inputs={"runs": runs, "fit": fit},
                 outputs={"words": "results/figures/isoflop_intervals.rst"},
                 figures={"figure": (FIGURES[1], "isoflop.rst", sizing)}),
            Step("plot_compute_optimal", "isoflop plot compute-optimal --fit {input.fit}"
                 " --out {output.figure}", inputs={"fit": fit},
                 figures={"figure": (FIGURES[2], "compute_optimal.rst", sizing)}),
        ]

    def summary(self, cfg):
        table = self.plan(cfg)
        kept = study.trained_runs(table)
        trained = phase_flops(table.assign(batch_tokens=study.batch_tokens(cfg)))["total"]
        independent = float(kept["C_actual"].sum())
        lines = [f"config OK: {len(cfg.model.sizes)} sizes x {len(cfg.isoflop.budgets)} budgets "
                 f"-> {len(kept)} branches from {kept['series_id'].nunique()} stable runs",
                 f"  first round: {trained:.3g} FLOPs trained for the {independent:.3g} of as "
                 f"many independent runs (compute_saving_ratio {independent / trained:.2f})"]
        if cfg.isoflop.predicted_budgets:
            predicted = study.trained_runs(study.plan_predicted(cfg))
            equivalent = independent + float(predicted["C_actual"].sum())
            lines.append(f"  {len(cfg.isoflop.predicted_budgets)} predicted budget(s) train "
                         f"nothing: {len(predicted)} branches from the schedule law "
                         f"(compute_saving_ratio with them {equivalent / trained:.2f})")
        rounds = isoflop_rounds.round_count(cfg)
        if rounds:
            lines.append(f"  then {rounds} refinement round(s) planned from the fits "
                         f"({cfg.isoflop.noise_seeds} noise seed(s) of the runs nearest each "
                         f"optimum, up to {cfg.adaptive.max_new_sizes} new size(s) a round)")
        lines += [f"  left out {row.run_id}: {row.reason}"
                  for row in study.excluded_runs(table).itertuples()]
        return lines


def round_name(r: int) -> str:
    """The training group (rule names, runs and specs folder) of refinement round `r`."""
    return f"isoflop_r{r}"


def round_specs_dir(r) -> str:
    """Where round `r`'s checkpoint writes the spec of each series it plans."""
    return f"results/specs/{round_name(r)}"


def round_file(r: int, name: str) -> str:
    """A file of round `r`: plan.csv (its checkpoint's), runs.csv, curves.csv, fit.json (the
    fit over rounds 0..r that the next round plans from)."""
    return f"{ROUNDS_DIR}/round{r}/{name}"


def write_round_specs(cfg, table: pd.DataFrame, specs_dir) -> list[str]:
    """Write the spec of every series a refinement round's plan trains, `{specs_dir}/{series}.json`
    (the round's TrainingGroup reads them). The round's checkpoint writes them with its plan: a
    rule per spec would start a job, and Python with it, before each stable run of the round."""
    os.makedirs(specs_dir, exist_ok=True)
    trained = study.trained_runs(table) if len(table) else table
    paths = []
    for series in sorted(trained["series_id"].unique()) if len(trained) else []:
        path = os.path.join(specs_dir, f"{series}.json")
        atomic.write_json(path, study.series_spec(cfg, table, series).to_dict())
        paths.append(path)
    return paths


def previous_round(wildcards) -> dict:
    """The inputs of round r's checkpoint: the fit and runs of the rounds before it."""
    before = int(wildcards.round) - 1
    return {"fit": round_file(before, "fit.json"), "runs": round_file(before, "runs.csv")}


def round_plans(cfg) -> list[str]:
    return [round_file(r, "plan.csv") for r in range(1, isoflop_rounds.round_count(cfg) + 1)]


def run_files(first: TrainingGroup, plans: list[str]) -> dict:
    """{stable, branches}: the run.json files of the first grid and of the rounds whose
    (finished) checkpoint plans are `plans`, in round order."""
    stable, branches = first.stable_run_jsons(), first.branch_run_jsons()
    for r, plan in enumerate(plans, start=1):
        table = isoflop_rounds.read_plan(plan)
        more = isoflop_rounds.round_run_jsons(table, f"results/runs/{round_name(r)}")
        stable, branches = stable + more[0], branches + more[1]
    return {"stable": stable, "branches": branches}
