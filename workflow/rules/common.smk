# Config validation, the study table and named helper functions. No rules here.
import json
import os
import re
import sys

import pandas as pd

from scalinglab.config import StudyConfig, from_dict, to_dict
from scalinglab.distributed import launcher
from scalinglab.resources import runtime_minutes
from scalinglab.resources import train_mem_mb as train_mem_mb_for
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
# The command that starts a training verb of the IsoFLOP and variants phases: `python -m
# scalinglab`, or torchrun with resources.gpus_per_run data-parallel processes. The shell strings
# name this global rather than a param: params are a rerun trigger, and the number of processes
# changes no result (the checkpoints are the same files either way).
TRAIN_LAUNCHER = launcher(STUDY.resources.gpus_per_run)
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


# -- resources: portable estimates; partitions and accounts live in workflow/profiles/slurm ---
# the throughput the other phases' runtime estimates use (config `resources`)
CPU_FLOPS_PER_SECOND = STUDY.resources.flops_per_second


def _series_flops(series):
    rows = ISOFLOP[ISOFLOP["series_id"] == series]
    stable = (
        rows["stable_steps"].iloc[0] * rows["D"].iloc[0] / max(rows["steps"].iloc[0], 1)
    )
    return float(stable * rows["flops_per_token"].iloc[0])


def train_runtime(wildcards, attempt):
    if "label" in wildcards.keys():
        rows = ISOFLOP[
            (ISOFLOP["series_id"] == wildcards.series)
            & (ISOFLOP["label"] == wildcards.label)
        ]
        flops = float(rows["C_actual"].iloc[0])
    else:
        flops = _series_flops(wildcards.series)
    return runtime_minutes(
        flops,
        STUDY.resources.flops_per_second,
        STUDY.resources.runtime_margin,
        attempt,
    )


def train_mem_mb(wildcards):
    rows = ISOFLOP[ISOFLOP["series_id"] == wildcards.series]
    return train_mem_mb_for(int(rows["N_total"].iloc[0]), STUDY.resources.gpus_per_run)


def train_threads(wildcards):
    # one core per data-parallel process (on the CPU they split the job's threads between them)
    return STUDY.resources.gpus_per_run


def train_gpus(wildcards):
    # Only an explicit "cuda" asks the scheduler for GPUs: "auto" must not leave a CPU study
    # waiting in a GPU queue, and a job that asked for a GPU fails rather than train on the CPU.
    # A data-parallel job (TRAIN_LAUNCHER) asks for one GPU per process.
    return STUDY.resources.gpus_per_run if STUDY.training.device == "cuda" else 0
