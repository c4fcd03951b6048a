# Config validation, the study table and named helper functions. No rules here.
import dataclasses
import json
import os
import re
import sys
from types import SimpleNamespace

import pandas as pd

from scalinglab.config import StudyConfig, from_dict, to_dict
from scalinglab.resources import TrainingResources, training_job
from scalinglab.study import plan_isoflop, series_spec, trained_runs, trained_series
from snakemake.utils import validate

validate(config, "../schemas/config.schema.yaml")

STUDY = from_dict(StudyConfig, config)
ISOFLOP = plan_isoflop(STUDY)
ISOFLOP_TRAINED = trained_runs(ISOFLOP)
ISOFLOP_SERIES = trained_series(ISOFLOP)
ISOFLOP_LABELS = list(dict.fromkeys(ISOFLOP["label"]))

# Jobs run `python -m scalinglab`: put the interpreter that runs Snakemake (the project's .venv)
# first on PATH, so a rule works without an activated environment, locally and on cluster nodes
# (every job re-reads this file).
os.environ["PATH"] = os.pathsep.join(
    [os.path.dirname(sys.executable), os.environ["PATH"]]
)
TOKENS_DIR = "results/data/tokens"
RUNS_DIR = "results/runs/isoflop"

STUDY_FIGURES = [
    "results/figures/loss_curves.png",
    "results/figures/isoflop.png",
    "results/figures/compute_optimal.png",
]


def _one_of(values):
    return "|".join(re.escape(v) for v in values)


wildcard_constraints:
    series=_one_of(ISOFLOP_SERIES),
    label=_one_of(ISOFLOP_LABELS),


# -- resolved specs, written by a local rule from params so that editing the config reruns
#    exactly the jobs whose spec changed --------------------------------------------------------
SPECS = {
    "corpus": {"seed": STUDY.seed, "corpus": to_dict(STUDY.corpus)},
    "study": to_dict(STUDY),
    **{f"series/{sid}": series_spec(STUDY, ISOFLOP, sid) for sid in ISOFLOP_SERIES},
}


def spec_json(wildcards):
    return json.dumps(SPECS[wildcards.name], sort_keys=True)


# -- inputs ----------------------------------------------------------------------------------
def stable_run_jsons(wildcards):
    return [f"{RUNS_DIR}/{sid}/stable/run.json" for sid in ISOFLOP_SERIES]


def branch_run_jsons(wildcards):
    return [
        f"{RUNS_DIR}/{row.series_id}/{row.label}/run.json"
        for row in ISOFLOP_TRAINED.itertuples()
    ]


# -- resources: one factory for every training rule of every phase (scalinglab.resources);
#    partitions and accounts live in workflow/profiles/slurm -----------------------------------
TRAINING_RESOURCES = TrainingResources.of(STUDY, os.environ.get("SCALINGLAB_GPU_MODEL"))


def isoflop_spec(wildcards):
    return SPECS[f"series/{wildcards.series}"]


def training_resources(
    spec=None, *, label_wildcard=None, label=None, data_parallel=False
):
    """Named functions for the `resources` of a training job (the same five in every phase):
    runtime (FLOPs of the job, margin, throughput, attempt), mem_mb (N_total of its model), gpu,
    gpu_model and slurm_extra, all from scalinglab.resources.

    The job is the stable run of the series spec `spec(wildcards)`, or with `label_wildcard`
    (the wildcard holding the label) or `label` (a fixed one) that series' decay branch.
    `spec=None` reads the spec from the job's `spec` input: for a spec that a job writes (the
    validation run's), which a dry run shows as <TBD> and the job gets once it is scheduled.
    `data_parallel`: the job runs `resources.gpus_per_run` processes (`--processes
    {resources.processes}`: the IsoFLOP and variants rules); the other phases' jobs are one.
    """
    settings = (
        TRAINING_RESOURCES
        if data_parallel
        else dataclasses.replace(TRAINING_RESOURCES, processes=1)
    )

    def job(wildcards, input):
        if spec is None:
            with open(input.spec) as f:
                series = json.load(f)
        else:
            series = spec(wildcards)
        return training_job(
            series, wildcards[label_wildcard] if label_wildcard else label
        )

    def runtime(wildcards, input, attempt):
        return settings.runtime(job(wildcards, input), attempt)

    def mem_mb(wildcards, input):
        return settings.mem_mb(job(wildcards, input))

    def gpu_model(wildcards):
        return settings.gpu_model

    return SimpleNamespace(
        runtime=runtime,
        mem_mb=mem_mb,
        gpu=settings.gpu,
        gpu_model=gpu_model,
        slurm_extra=settings.slurm_extra,
        # a resource, not a param: params are a rerun trigger, and the number of processes
        # does not change what a run computes
        processes=settings.processes,
    )


TRAIN_STABLE = training_resources(isoflop_spec, data_parallel=True)
DECAY_BRANCH = training_resources(
    isoflop_spec, label_wildcard="label", data_parallel=True
)


def train_threads(wildcards):
    # one core per data-parallel process (on the CPU they split the job's threads between them)
    return STUDY.resources.gpus_per_run
