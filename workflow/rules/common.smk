# Config validation, the study table and named helper functions. No rules here.
import json
import os
import sys

from scalinglab import jobs, phases
from scalinglab.config import StudyConfig, from_dict, to_dict
from scalinglab.phases import JobResources, one_of
from scalinglab.phases.base import TOKENS_DIR
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
