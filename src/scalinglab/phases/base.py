"""The one abstraction every phase of a study is written on.

A *phase* is one question a study asks (where the compute-optimal frontier lies, whether the LR
transfers across width, ...). It has a name, its config section, a planner that turns the study
config into a run table (one row per decay branch, the columns of `study.plan_isoflop`), the spec
of each series it trains, and the files it adds to `rule all`. Modelled on OLMo-core's model
ladder, where one run configurator serves every rung: a phase never writes training rules of its
own. It hands the workflow `TrainingGroup`s, and `workflow/rules/train.smk` instantiates the one
definition of `write_spec` / `train_stable` / `decay_branch` for each group. Its analysis (fits,
figures) is a list of `Step`s, each one `python -m scalinglab` command, which
`workflow/rules/steps.smk` makes into rules from one definition.

A group is a set of series that share their branch labels, because a stable rule's outputs (one
checkpoint per label) must be named when the DAG is built; most phases have one group, WSD vs
cosine has two (the WSD series branch per budget x fraction x shape, the cosine ones per budget).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from inspect import signature
from typing import NamedTuple

import pandas as pd

from scalinglab.training.resources import TrainingJob, TrainingResources, training_job
from scalinglab.training.spec import RunSpec

TOKENS_DIR = "results/data/tokens"
# the resolved study config every analysis step reads (written by the write_spec rule)
STUDY_SPEC = "results/specs/study.json"


def one_of(values) -> str:
    """A wildcard constraint matching exactly these ids (never matches when empty)."""
    values = list(values)
    return "|".join(re.escape(v) for v in values) if values else "(?!x)x"


def trained(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a run table that train (`reason == ""`)."""
    return table if table.empty else table[table["reason"] == ""]


class BranchBatch(NamedTuple):
    """One branch rule of `resources.branch_jobs: series`: its jobs decay `labels` in turn for
    each series that `series_constraint` matches (`TrainingGroup.branch_batches`)."""

    labels: list[str]
    series_constraint: str
    skip_untrained: bool = False


@dataclass(frozen=True, eq=False)
class TrainingGroup:
    """Series that the shared training rules train under one rule name each.

    `name` names the rules (`train_stable_<name>`, `decay_branch_<name>`, or with
    `resources.branch_jobs: series` `decay_branches_<name>_<k>`) and their logs.
    `specs` maps series id -> spec dict, written by the shared `write_spec` rule from params (an
    edited config reruns exactly the runs whose spec changed); `None` when a job of the phase
    writes the spec (the validation run's comes from the recipe). `decays=False`: the stable
    runs are the measurement and no branch is trained. `threads=None`: one thread per
    data-parallel process (`resources.gpus_per_run`), and the jobs run that many processes.
    `plan`: a file that gates training (the epoch check) without its timestamp retraining.
    `dynamic`: the series are planned by a checkpoint job (an IsoFLOP refinement round), so
    they are unknown when the DAG is built: the rules match any series id in `runs_dir`, and
    `specs` is None (a job writes each spec from that plan).
    """

    name: str
    runs_dir: str
    specs_dir: str
    table: pd.DataFrame
    specs: dict | None
    decays: bool = True
    threads: int | None = 1
    plan: str | None = None
    dynamic: bool = False

    @property
    def series_constraint(self) -> str:
        """The `series` wildcard constraint of its rules."""
        return "[^/]+" if self.dynamic else one_of(self.series)

    @property
    def series(self) -> list[str]:
        rows = trained(self.table)
        return [] if rows.empty else sorted(rows["series_id"].unique())

    @property
    def labels(self) -> list[str]:
        if self.table.empty or not self.decays:
            return []
        return list(dict.fromkeys(self.table["label"]))

    @property
    def data_parallel(self) -> bool:
        return self.threads is None

    def spec_file(self, series: str) -> str:
        return f"{self.specs_dir}/{series}.json"

    def run_dir(self, series: str, label: str = "stable") -> str:
        return f"{self.runs_dir}/{series}/{label}"

    def spec(self, wildcards) -> dict:
        return self.specs[wildcards.series]

    def stable_run_jsons(self, wildcards=None) -> list[str]:
        return [f"{self.run_dir(sid)}/run.json" for sid in self.series]

    def branch_batches(self) -> list[BranchBatch]:
        """The branch rules of `resources.branch_jobs: series`, where one job decays a series'
        branches. A static group has one per set of trained labels, matching the series that
        decay exactly those, so that a job's outputs are its branches. A dynamic group's
        series are planned while the workflow runs: one rule names every label of the group,
        and its jobs write placeholders for the branches their plan leaves out."""
        if not self.decays:
            return []
        if self.dynamic:
            return [BranchBatch(self.labels, self.series_constraint, skip_untrained=True)]
        rows = trained(self.table)
        by_labels: dict[tuple[str, ...], list[str]] = {}
        for sid, labels in rows.groupby("series_id", sort=True)["label"]:
            by_labels.setdefault(tuple(labels), []).append(sid)
        return [BranchBatch(list(labels), one_of(series)) for labels, series in by_labels.items()]

    def branch_run_jsons(self, wildcards=None) -> list[str]:
        if not self.decays:
            return []
        return [f"{self.run_dir(row.series_id, row.label)}/run.json"
                for row in trained(self.table).itertuples()]


# Training jobs take priorities in [0, 1), longest first (`JobResources.priority`); a step that
# should start before any of them takes FIRST: one that is long and runs beside them (the
# schedule-law fit), and the short ones that unlock a refinement round's training.
FIRST = 1.0
# the FLOPs at which a training job's priority is one half (any scale orders them the same)
_PRIORITY_FLOPS = 1e12


@dataclass(frozen=True)
class JobResources:
    """The `resources` functions of one training rule: runtime (the FLOPs of the job, margin,
    throughput, attempt), mem_mb (N_total of its model), gpu, gpu_model and slurm_extra, all
    from `training.resources`; and its `priority`. `branch`: the rule decays a branch (its label
    a wildcard). `series_branch_jobs`: one job decays each series' branches after its stable
    run (`resources.branch_jobs: series`)."""

    settings: TrainingResources
    group: TrainingGroup
    branch: bool = False
    # a job that decays these branches in turn (`resources.branch_jobs: series`), not one
    labels: tuple[str, ...] = ()
    series_branch_jobs: bool = False

    @classmethod
    def of(cls, settings: TrainingResources, group: TrainingGroup,
           branch: bool = False, labels=(), series_branch_jobs: bool = False) -> JobResources:
        if not group.data_parallel:
            settings = TrainingResources(settings.flops_per_second, settings.margin,
                                         settings.device, settings.requested_gpu_model, 1)
        return cls(settings, group, branch, tuple(labels), series_branch_jobs)

    def _spec(self, wildcards, input) -> RunSpec:
        if self.group.specs is None:  # a spec that a job writes: read it once it exists
            with open(input.spec) as f:
                return RunSpec.of(json.load(f))
        return RunSpec.of(self.group.spec(wildcards))

    def _job(self, wildcards, input):
        run = self._spec(wildcards, input)
        if self.labels:
            # a dynamic group's job names every label; it decays only those its plan trains
            jobs = [training_job(run, label) for label in self.labels
                    if run.branch(label) is not None and run.branch(label).trained]
            return TrainingJob(sum(job.flops for job in jobs), int(run.N_total))
        return training_job(run, wildcards.label if self.branch else None)

    def priority(self, wildcards, input) -> float:
        """Longest first, by the FLOPs that wait on the job: its own, and for a stable run those
        of the branches after it (their one job under `series_branch_jobs`, else the longest).
        Snakemake starts the ready jobs of highest priority first; a long stable run left to the
        last would run, then its branches, with the other cores idle. Snakemake's scheduler
        maximises the sum of the priorities it starts, and this scale is concave: among jobs
        of several threads (a 2-thread validation run), two short ones can outrank one long.
        (A spec not yet on disk ranks lowest: the round's checkpoint writes them all before
        its jobs join the DAG, so this is a guard.)"""
        if self.group.specs is None and not os.path.exists(input.spec):
            return 0.0
        flops = self._job(wildcards, input).flops
        if not self.branch and self.group.decays:
            run = self._spec(wildcards, input)
            after = [training_job(run, b.label).flops for b in run.branches if b.trained]
            flops += (sum(after) if self.series_branch_jobs else max(after)) if after else 0.0
        return flops / (flops + _PRIORITY_FLOPS)

    def runtime(self, wildcards, input, attempt):
        return self.settings.runtime(self._job(wildcards, input), attempt)

    def mem_mb(self, wildcards, input):
        return self.settings.mem_mb(self._job(wildcards, input))

    def gpu_model(self, wildcards):
        return self.settings.gpu_model

    @property
    def gpu(self) -> int:
        return self.settings.gpu

    @property
    def slurm_extra(self) -> str:
        return self.settings.slurm_extra

    @property
    def processes(self) -> int:
        # a resource, not a param: params are a rerun trigger, and the number of processes
        # does not change what a run computes
        return self.settings.processes

    def directive(self) -> dict:
        """The rule's `resources:`, by name."""
        return {"runtime": self.runtime, "mem_mb": self.mem_mb, "gpu": self.gpu,
                "gpu_model": self.gpu_model, "slurm_extra": self.slurm_extra,
                "processes": self.processes}


def group_named(groups: list[TrainingGroup], name: str) -> TrainingGroup:
    """The training group `name` among `groups`, or an empty one when its phase is off (the
    analysis rules of a phase that is off are still defined, with no inputs)."""
    return next((g for g in groups if g.name == name),
                TrainingGroup(name, "", "", pd.DataFrame(), {}))


class _Names:
    """Attribute access to a dict, as Snakemake's {params.x} reads a rule's params."""

    def __init__(self, values: dict):
        self.__dict__.update(values)


@dataclass(frozen=True)
class Step:
    """One rule of a phase that trains nothing: `python -m scalinglab {command}` from `inputs`
    to `outputs`, its log results/logs/{name}.log and its benchmark results/benchmarks/
    {name}.tsv. `command` names files as Snakemake does ({input.runs}, {output.fit}, {params.x});
    `figures` are the outputs that go in the report: key -> (path, caption file under
    workflow/report/, report category). `params` are the rule's params: values, a change of
    which reruns the step, or functions of (some of) the rule's wildcards, input and output, as
    Snakemake takes them. The rule reruns when `command`'s text changes (steps.smk)."""

    name: str
    command: str
    inputs: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    figures: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    # Snakemake's priority: 0 waits for the training jobs that are ready with it, FIRST does not
    priority: float = 0.0

    def command_line(self, wildcards, input, output) -> str:
        """`command` with its files and params filled in: the rule's `params.command`. Snakemake
        formats a rule's shell string when the job runs, after the loop of steps.smk has moved
        on, so each rule carries its own command as a param rather than in its shell string."""
        files = {"wildcards": wildcards, "input": input, "output": output}
        params = {key: value(**{name: files[name] for name in signature(value).parameters})
                  if callable(value) else value for key, value in self.params.items()}
        return self.command.format(input=input, output=output, params=_Names(params))

    @property
    def command_text(self) -> str:
        """`command` as a plain param value for the params rerun trigger: Snakemake would expand
        its {...} as wildcards, so they are written <...>."""
        return self.command.replace("{", "<").replace("}", ">")

    def report_outputs(self, report) -> dict:
        """`figures` wrapped by Snakemake's `report` (passed in: the package does not import
        Snakemake)."""
        return {key: report(path, caption=f"../report/{caption}", category=category)
                for key, (path, caption, category) in self.figures.items()}


@dataclass(frozen=True)
class Phase:
    """One phase: subclasses set `name` and `section` and override what they need.

    `plan(cfg)` is the run table (empty when the phase is off), `series_spec` the spec of one of
    its series, `groups(cfg)` what the shared training rules train, `targets(cfg)` what `rule
    all` asks of it, `summary(cfg)` its lines in `check-config` (planning there reports a bad
    key of the phase's section before Snakemake parses anything).
    """

    name: str = ""
    section: str | None = None

    def enabled(self, cfg) -> bool:
        section = getattr(cfg, self.section) if self.section else None
        return bool(getattr(section, "enabled", True))

    def plan(self, cfg) -> pd.DataFrame:
        return pd.DataFrame()

    def series_spec(self, cfg, table: pd.DataFrame, sid: str) -> RunSpec:
        raise NotImplementedError(f"phase {self.name} trains no series")

    def group(self, cfg, table: pd.DataFrame, name: str | None = None, **options):
        """One training group over `table`, its specs from `series_spec` as the dicts the
        `write_spec` rule writes (`RunSpec.to_dict`)."""
        folder = self.folder(cfg)
        group = TrainingGroup(name or self.name, f"results/runs/{folder}",
                              f"results/specs/{folder}", table, {}, **options)
        group.specs.update({sid: self.series_spec(cfg, table, sid).to_dict()
                            for sid in group.series})
        return group

    def folder(self, cfg) -> str:
        """The folder of its runs and specs under results/runs/ and results/specs/."""
        return self.name

    def groups(self, cfg) -> list[TrainingGroup]:
        table = self.plan(cfg)
        return [self.group(cfg, table)] if len(table) else []

    def targets(self, cfg) -> list[str]:
        return []

    def steps(self, cfg, groups: list[TrainingGroup]) -> list[Step]:
        """Its analysis rules, defined whether the phase is on or not (`groups`: every training
        group of the study, `group_named` finds its own)."""
        return []

    def summary(self, cfg) -> list[str]:
        return []
