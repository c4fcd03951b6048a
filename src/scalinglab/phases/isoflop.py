"""The spine: the IsoFLOP grid, one WSD stable run per size and a decay branch per budget
(`study.plan_isoflop`), collected into runs.csv and fitted by the law library."""

from __future__ import annotations

from dataclasses import dataclass

from scalinglab.phases import study
from scalinglab.phases.base import Phase

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
        return [self.group(cfg, self.plan(cfg), threads=None, plan="results/study/plan.csv")]

    def targets(self, cfg):
        return ["results/metrics/runs.csv", "results/fits/isoflop.json", *FIGURES]

    def summary(self, cfg):
        table = self.plan(cfg)
        kept = study.trained_runs(table)
        lines = [f"config OK: {len(cfg.model.sizes)} sizes x {len(cfg.isoflop.budgets)} budgets "
                 f"-> {len(kept)} branches to train, {kept['C_actual'].sum():.3g} FLOPs in all"]
        lines += [f"  left out {row.run_id}: {row.reason}"
                  for row in study.excluded_runs(table).itertuples()]
        return lines
