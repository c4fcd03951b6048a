"""The environment a workflow job runs `python -m scalinglab` in."""

from __future__ import annotations

import os
from collections.abc import Mapping


def environment(basedir: str, interpreter: str, environ: Mapping[str, str]) -> dict[str, str]:
    """PATH and PYTHONPATH for the jobs of the workflow at `basedir`.

    The interpreter that runs Snakemake (the project's .venv) comes first on PATH, so a rule
    works without an activated environment, locally and on cluster nodes. A job in a conda env
    (--software-deployment-method conda, workflow/envs/scalinglab.yaml) has the dependencies
    only, so the checkout's src/ comes first on PYTHONPATH. Every job re-reads the Snakefile,
    hence sees the same values.
    """

    def first(entry: str, value: str) -> str:
        parts = [entry, *value.split(os.pathsep)]
        return os.pathsep.join(dict.fromkeys(p for p in parts if p))

    return {
        "PATH": first(os.path.dirname(interpreter), environ.get("PATH", "")),
        "PYTHONPATH": first(os.path.join(basedir, "src"), environ.get("PYTHONPATH", "")),
    }
