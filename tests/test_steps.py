"""The phases' analysis steps (`Phase.steps`), which workflow/rules/steps.smk makes into rules
from one definition: each names only files it declares, writes files no other step writes, and
has its caption; the rules they make are the ones the workflow runs."""

from __future__ import annotations

import re

import pytest

from helpers import REPO, job_counts, snakemake
from scalinglab import phases
from scalinglab.cli.io import merged_config
from scalinglab.config import StudyConfig, from_dict
from scalinglab.phases.base import Step

CONFIGS = ["config.yaml", *(p.name for p in sorted((REPO / "workflow/configs").glob("*.yaml")))]


def steps_of(name: str) -> list[Step]:
    paths = [str(REPO / "config.yaml")]
    if name != "config.yaml":
        paths.append(str(REPO / "workflow/configs" / name))
    cfg = from_dict(StudyConfig, merged_config(paths))
    return phases.steps(cfg, phases.training_groups(cfg))


@pytest.mark.parametrize("name", CONFIGS)
def test_every_placeholder_of_a_command_is_a_declared_file_or_param(name):
    for step in steps_of(name):
        outputs = {**step.outputs, **step.figures}
        for kind, key in re.findall(r"\{(input|output|params)\.(\w+)\}", step.command):
            declared = {"input": step.inputs, "output": outputs, "params": step.params}[kind]
            assert key in declared, (step.name, kind, key)
        # and nothing declared goes unused: an output the command never writes would be missing
        for key in outputs:
            assert f"{{output.{key}}}" in step.command, (step.name, key)
        assert not set(step.outputs) & set(step.figures), step.name


@pytest.mark.parametrize("name", CONFIGS)
def test_steps_have_unique_names_and_outputs_and_existing_captions(name):
    steps = steps_of(name)
    assert len({s.name for s in steps}) == len(steps)
    written = [path for s in steps for path in [*s.outputs.values(),
                                                *(f[0] for f in s.figures.values())]]
    assert len(set(written)) == len(written)
    for step in steps:
        for path, caption, category in step.figures.values():
            assert (REPO / "workflow/report" / caption).is_file(), (step.name, caption)
            assert category and path.startswith("results/")


def test_report_outputs_wrap_only_the_figures():
    step = Step("fit_x", "x fit --out {output.fit} --figure {output.figure}",
                outputs={"fit": "results/fits/x.json"},
                figures={"figure": ("results/figures/x.png", "x.rst", "X")})
    wrapped = step.report_outputs(lambda path, caption, category: (path, caption, category))
    assert wrapped == {"figure": ("results/figures/x.png", "../report/x.rst", "X")}
    # the command the rule runs, its files and params filled in (a param function's too)
    fitted = Step("fit_y", "y fit --runs {input.runs} --dir {params.dir} --k {params.k}"
                  " --out {output.fit}", params={"dir": lambda wildcards, input: "d", "k": 3})
    files = type("Files", (), {"runs": "a.json b.json", "fit": "y.json"})()
    assert fitted.command_line({}, files, files) == "y fit --runs a.json b.json --dir d --k 3" \
        " --out y.json"
    assert fitted.command_text == "y fit --runs <input.runs> --dir <params.dir> --k <params.k>" \
        " --out <output.fit>"
    # a param function names what it takes, as Snakemake's do
    named = Step("fit_z", "z --out {params.out}",
                 params={"out": lambda output: f"{output.fit}.tmp"})
    assert named.command_line({}, files, files) == "z --out y.json.tmp"


def test_the_default_study_runs_each_of_its_steps_once(tmp_path):
    result = snakemake(tmp_path, "-n", "--cores", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout + result.stderr)
    for step in ("plot_isoflop", "plot_compute_optimal", "plot_loss_curves", "fit_schedule_law",
                 "predict_budgets", "fit_compute_optimal", "make_recipe", "fit_downstream"):
        assert counts[step] == 1, step
    # the phases that are off define their steps but run none
    for step in ("fit_hparams", "fit_lr_transfer", "fit_validation", "fit_wsd_vs_cosine"):
        assert step not in counts
