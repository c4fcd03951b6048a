"""The phases of a study, each one module on `base.Phase`, and their registry.

`PHASES` is the one list that `check-config`, `rule all`, the training rules and the docs'
phase list iterate. A new phase is a module here and a line below; it never adds training rules.
"""

from __future__ import annotations

from scalinglab.phases.base import JobResources, Phase, Step, TrainingGroup, group_named, one_of
from scalinglab.phases.depth_transfer import DepthTransfer
from scalinglab.phases.downstream import Downstream
from scalinglab.phases.isoflop import Isoflop
from scalinglab.phases.lr_transfer import CoordCheck, LrTransfer
from scalinglab.phases.recipe import Recipe, Validation
from scalinglab.phases.schedule_law import ScheduleLaw
from scalinglab.phases.sweeps import CRITICAL_BATCH, HPARAMS, WSD_VS_COSINE
from scalinglab.phases.variants import Variants

PHASES: tuple[Phase, ...] = (
    Isoflop(),
    ScheduleLaw(),
    HPARAMS,
    CRITICAL_BATCH,
    WSD_VS_COSINE,
    Recipe(),
    Validation(),
    CoordCheck(),
    LrTransfer(),
    DepthTransfer(),
    Variants(),
    Downstream(),
)


def by_name(name: str) -> Phase:
    return next(phase for phase in PHASES if phase.name == name)


def training_groups(cfg) -> list[TrainingGroup]:
    """Every group the shared training rules train, over the phases that are on."""
    return [group for phase in PHASES if phase.enabled(cfg) for group in phase.groups(cfg)]


def steps(cfg, groups: list[TrainingGroup]) -> list[Step]:
    """Every phase's analysis rules (`Phase.steps`), in registry order."""
    return [step for phase in PHASES for step in phase.steps(cfg, groups)]


def targets(cfg) -> list[str]:
    """What `rule all` asks: each phase's targets, in registry order, once each."""
    return list(dict.fromkeys(t for phase in PHASES for t in phase.targets(cfg)))


def summary(cfg) -> list[str]:
    """`check-config`'s lines: each phase plans itself, so a bad key of its section is reported
    before Snakemake parses the workflow."""
    return [line for phase in PHASES for line in phase.summary(cfg)]


__all__ = ["PHASES", "JobResources", "Phase", "Step", "TrainingGroup", "by_name", "group_named",
           "one_of", "steps", "summary", "targets", "training_groups"]
