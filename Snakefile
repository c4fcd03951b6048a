# scalinglab: a scaling-law study as a Snakemake DAG in which every figure is a target.
# The logic lives in the `scalinglab` package; these files only wire its CLI together.
import os

from snakemake.utils import min_version

min_version("9.0")


configfile: os.path.join(workflow.basedir, "config.yaml")


# common.smk puts this Snakemake's interpreter first on PATH for the jobs (scalinglab.jobs)
envvars:
    "PATH",


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/laws.smk"
include: "workflow/rules/paper.smk"
include: "workflow/rules/mup.smk"
include: "workflow/rules/variants.smk"
include: "workflow/rules/steps.smk"


rule all:
    default_target: True
    input:
        # what each phase of the registry (scalinglab.phases) asks when it is on
        phases.targets(STUDY),
        PAPER_FIGURES,
