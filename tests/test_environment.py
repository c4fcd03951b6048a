"""How the workflow is run: the conda env of its `conda:` rules pins what pyproject.toml pins, and
every way of starting it prints a failed job's log."""

from __future__ import annotations

import re
import tomllib

import yaml

from helpers import REPO

# PyPI name -> conda-forge name, where they differ
CONDA_NAMES = {"torch": "pytorch"}


def pyproject_pins() -> dict[str, str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {}
    for dep in deps:
        name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s;]+)", dep).groups()
        pins[name.lower()] = version
    return pins


def env_pins() -> dict[str, str]:
    """{pypi name: version} of workflow/envs/scalinglab.yaml, its conda and its pip entries."""
    env = yaml.safe_load((REPO / "workflow/envs/scalinglab.yaml").read_text())
    from_conda = {conda: pypi for pypi, conda in CONDA_NAMES.items()}
    pins = {}
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            for line in entry["pip"]:
                assert not line.startswith("-"), f"pip option {line!r}: the env lists packages"
                name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line).groups()
                pins[name.lower()] = version
        elif entry in ("pip",) or entry.startswith("python="):
            continue
        else:
            name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)=(\S+)", entry).groups()
            pins[from_conda.get(name, name).lower()] = version
    return pins


def test_conda_env_pins_the_pyproject_dependencies():
    assert env_pins() == pyproject_pins()


def test_conda_env_python_meets_requires_python():
    env = yaml.safe_load((REPO / "workflow/envs/scalinglab.yaml").read_text())
    python = next(e for e in env["dependencies"] if isinstance(e, str) and e.startswith("python="))
    required = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    low = tuple(int(x) for x in required.removeprefix(">=").split("."))
    assert tuple(int(x) for x in python.removeprefix("python=").split(".")) >= low


def test_make_study_and_the_profiles_print_a_failed_jobs_log():
    # the job's one-line error (`scalinglab VERB: error: ...`) is in its log, not on the console
    for profile in ("local", "slurm"):
        text = (REPO / "workflow/profiles" / profile / "config.yaml").read_text()
        assert "\nshow-failed-logs: true\n" in text, profile
    study = (REPO / "Makefile").read_text().split("\nstudy:")[1].split("\n\n")[0]
    snakemake_line = next(line for line in study.splitlines() if "snakemake " in line)
    assert "--show-failed-logs" in snakemake_line.split()
