# Config validation, the study table and named helper functions. No rules here.
import json
import os
import sys

from scalinglab import jobs, phases
from scalinglab.config import StudyConfig, from_dict, to_dict
from scalinglab.phases import (
    JobResources,
    isoflop,
    isoflop_rounds,
    one_of,
    schedule_law,
)
from scalinglab.phases.base import FIRST, TOKENS_DIR
from scalinglab.training.resources import TrainingResources
from snakemake.utils import validate

validate(config, "../schemas/config.schema.yaml")

STUDY = from_dict(StudyConfig, config)

# jobs run `python -m scalinglab` with this interpreter and this checkout (scalinglab.jobs)
os.environ.update(jobs.environment(workflow.basedir, sys.executable, os.environ))

# every series that any phase trains, grouped by the labels its branches share
TRAINING_GROUPS = phases.training_groups(STUDY)
ISOFLOP = phases.by_name("isoflop").groups(STUDY)[0]

# -- resolved specs, written by the local write_spec rule from params so that editing the config
#    reruns exactly the jobs whose spec changed -----------------------------------------------
SPECS = {
    "corpus": {"seed": STUDY.seed, "corpus": to_dict(STUDY.corpus)},
    "study": to_dict(STUDY),
    **{
        group.spec_file(sid)[len("results/specs/") : -len(".json")]: spec
        for group in TRAINING_GROUPS
        if group.specs is not None
        for sid, spec in group.specs.items()
    },
}


def spec_json(wildcards):
    return json.dumps(SPECS[wildcards.name], sort_keys=True)


# -- resources: one factory for every training rule of every phase (scalinglab.training.resources);
#    partitions and accounts live in workflow/profiles/slurm -----------------------------------
TRAINING_RESOURCES = TrainingResources.of(STUDY, os.environ.get("SCALINGLAB_GPU_MODEL"))


# -- the IsoFLOP refinement rounds (scalinglab.phases.isoflop_rounds): each round's series are
#    planned by the checkpoint plan_isoflop_round, so their run files are known only after it ---
ISOFLOP_ROUNDS = isoflop_rounds.round_count(STUDY)


def _round_plans(last):
    return [
        checkpoints.plan_isoflop_round.get(round=str(r)).output[0]
        for r in range(1, last + 1)
    ]


# one input function per named input (not unpack): until a checkpoint has run, Snakemake puts
# the checkpoint's output in place of each, and the names the shell command uses stay defined
def isoflop_round_runs(kind):
    """The {kind} (stable or branches) run.json files of rounds 0..{round}: the tables of the
    fit that plans the next round."""
    return lambda wildcards: isoflop.run_files(
        ISOFLOP, _round_plans(int(wildcards.round))
    )[kind]


def isoflop_all_runs(kind):
    """The {kind} run.json files of every round."""
    return lambda wildcards: isoflop.run_files(ISOFLOP, _round_plans(ISOFLOP_ROUNDS))[
        kind
    ]


def isoflop_round_plans(wildcards):
    """The plans of the first grid and of rounds 1..{round}: the FLOPs the fit reports."""
    return ["results/study/plan.csv"] + [
        isoflop.round_file(r, "plan.csv") for r in range(1, int(wildcards.round) + 1)
    ]


# -- the budgets that train nothing (isoflop.predicted_budgets; scalinglab.phases.schedule_law) --
PREDICTED_RUNS = [schedule_law.PREDICTED] if STUDY.isoflop.predicted_budgets else []
