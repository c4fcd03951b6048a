"""The hyperparameter and schedule sweeps that share `results/hparams/plan.csv`: the LR x batch
sweep (DeepSeek LLM), the critical batch against loss (MiniCPM) and WSD against tuned cosine
runs. Each is a phase of its own; their planners live in the modules named by `planner`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from scalinglab.phases import critical_batch, hparams, recipe, wsd_vs_cosine
from scalinglab.phases import runs as phase_runs
from scalinglab.phases.base import STUDY_SPEC, Phase, Step, group_named

SWEEP_PLAN = "results/hparams/plan.csv"


@dataclass(frozen=True)
class Sweep(Phase):
    """A phase whose planner module has `plan(cfg)` and `series_spec(cfg, table, sid)`."""

    planner: ModuleType | None = None
    fit_targets: tuple[str, ...] = ()
    # (cfg, groups) -> its analysis steps
    step_maker: Callable | None = None

    def steps(self, cfg, groups):
        return self.step_maker(cfg, groups)

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


CATEGORY = "Hyperparameter laws"


def hparams_steps(cfg, groups) -> list[Step]:
    # the plan of all three sweeps: their runs share one table
    return [
        Step("plan_hparams", "hparams plan --config {input.spec} --out {output.plan}",
             inputs={"spec": STUDY_SPEC}, outputs={"plan": SWEEP_PLAN}),
        Step("fit_hparams", "hparams fit --runs {input.runs} --near-optimal {params.near_optimal}"
             " --target-compute {params.target} --out {output.fit} --runs-out {output.runs}"
             " --figure {output.figure}",
             inputs={"runs": group_named(groups, "hparams").branch_run_jsons},
             outputs={"fit": "results/fits/hparams.json", "runs": "results/hparams/runs.csv"},
             figures={"figure": ("results/figures/hparams.png", "hparams.rst", CATEGORY)},
             params={"near_optimal": cfg.hparams.near_optimal,
                     "target": recipe.validation_compute(cfg)}),
    ]


def critical_batch_steps(cfg, groups) -> list[Step]:
    return [Step(
        "fit_critical_batch", "critical-batch fit --runs {input.runs} --losses {params.losses}"
        " --n-losses {params.n_losses} --out {output.fit} --figure {output.figure}",
        inputs={"runs": group_named(groups, "critical_batch").stable_run_jsons},
        outputs={"fit": "results/fits/critical_batch.json"},
        figures={"figure": ("results/figures/critical_batch.png", "critical_batch.rst",
                            CATEGORY)},
        params={"losses": " ".join(map(str, cfg.critical_batch.losses)),
                "n_losses": cfg.critical_batch.n_losses})]


def wsd_vs_cosine_steps(cfg, groups) -> list[Step]:
    wsd, cosine = group_named(groups, "wsd"), group_named(groups, "cosine")
    return [Step(
        "fit_wsd_vs_cosine", "wsd-vs-cosine fit --config {input.spec} --runs {input.stable}"
        " {input.wsd} {input.cosine} --out {output.fit} --figure {output.figure}",
        inputs={"spec": STUDY_SPEC, "stable": wsd.stable_run_jsons,
                "wsd": wsd.branch_run_jsons, "cosine": cosine.branch_run_jsons},
        outputs={"fit": "results/fits/wsd_vs_cosine.json"},
        figures={"figure": ("results/figures/wsd_vs_cosine.png", "wsd_vs_cosine.rst",
                            "Schedules")})]


HPARAMS = Sweep("hparams", "hparams", planner=hparams, step_maker=hparams_steps,
                fit_targets=("results/fits/hparams.json", "results/figures/hparams.png"))
CRITICAL_BATCH = CriticalBatch(
    "critical_batch", "critical_batch", planner=critical_batch, step_maker=critical_batch_steps,
    fit_targets=("results/fits/critical_batch.json", "results/figures/critical_batch.png"))
WSD_VS_COSINE = WsdVsCosine(
    "wsd_vs_cosine", "wsd_vs_cosine", planner=wsd_vs_cosine, step_maker=wsd_vs_cosine_steps,
    fit_targets=("results/fits/wsd_vs_cosine.json", "results/figures/wsd_vs_cosine.png"))
