"""The hyperparameter and schedule sweeps that share `results/hparams/plan.csv`: the LR x batch
sweep (DeepSeek LLM), the critical batch against loss (MiniCPM) and WSD against tuned cosine
runs. Each is a phase of its own; their planners live in the modules named by `planner`."""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from scalinglab.phases import critical_batch, hparams, wsd_vs_cosine
from scalinglab.phases import runs as phase_runs
from scalinglab.phases.base import Phase

SWEEP_PLAN = "results/hparams/plan.csv"


@dataclass(frozen=True)
class Sweep(Phase):
    """A phase whose planner module has `plan(cfg)` and `series_spec(cfg, table, sid)`."""

    planner: ModuleType | None = None
    fit_targets: tuple[str, ...] = ()

    def plan(self, cfg):
        return self.planner.plan(cfg)

    def series_spec(self, cfg, table, sid):
        return self.planner.series_spec(cfg, table, sid)

    def targets(self, cfg):
        return [SWEEP_PLAN, *self.fit_targets] if self.enabled(cfg) else []

    def summary(self, cfg):
        table = self.plan(cfg)
        if table.empty:
            return []
        flops = phase_runs.phase_flops(table)
        kept = table[table["reason"] == ""]
        runs = (f"{len(kept)} constant-LR runs" if not self.decays else
                f"{kept['series_id'].nunique()} stable runs, {len(kept)} decay branches")
        return [f"{self.name}: {runs}, {flops['total']:.3g} FLOPs"]

    @property
    def decays(self) -> bool:
        return True


@dataclass(frozen=True)
class CriticalBatch(Sweep):
    """Constant-LR runs whose loss curves are the measurement: no decay branch."""

    def groups(self, cfg):
        table = self.plan(cfg)
        return [self.group(cfg, table, decays=False)] if len(table) else []

    @property
    def decays(self) -> bool:
        return False


@dataclass(frozen=True)
class WsdVsCosine(Sweep):
    """Two groups: the WSD series branch per budget x fraction x shape, each cosine series
    trains one run per budget from the initialisation (a stable run of zero steps)."""

    def groups(self, cfg):
        table = self.plan(cfg)
        if table.empty:
            return []
        # a series is all WSD or all cosine, so each group's specs come from its own rows
        return [self.group(cfg, table[table["kind"] == kind], name=kind)
                for kind in ("wsd", "cosine")]


HPARAMS = Sweep("hparams", "hparams", planner=hparams,
                fit_targets=("results/fits/hparams.json", "results/figures/hparams.png"))
CRITICAL_BATCH = CriticalBatch(
    "critical_batch", "critical_batch", planner=critical_batch,
    fit_targets=("results/fits/critical_batch.json", "results/figures/critical_batch.png"))
WSD_VS_COSINE = WsdVsCosine(
    "wsd_vs_cosine", "wsd_vs_cosine", planner=wsd_vs_cosine,
    fit_targets=("results/fits/wsd_vs_cosine.json", "results/figures/wsd_vs_cosine.png"))
