"""The keys every learning-rate transfer sweep section shares (``lr_transfer`` across width,
``depth_transfer`` across depth; `scalinglab.phases.lr_sweep`): the LR grid, the seeds, the
tokens per run, and the checks of the grid."""

from __future__ import annotations

from dataclasses import field

from scalinglab.config.fields import positive
from scalinglab.errors import UserError


def lrs_field():
    return field(
        default=(),
        metadata=positive("the learning-rate grid, log2-spaced and ascending", unique=True),
    )


def seeds_field():
    return field(
        default=(0,),
        metadata={"doc": "init and data-order seeds; the losses of the seeds are averaged",
                  "min_len": 1, "unique": True},
    )


def tokens_field():
    return field(
        default=262144, metadata=positive("training tokens per run (rounded to whole optimizer "
                                          "steps)")
    )


def check_lr_grid(lrs, enabled: bool, name: str) -> None:
    """Ascending, and (when the phase is on) three LRs at least, for a parabola."""
    if list(lrs) != sorted(lrs):
        raise UserError(f"{name}.lrs: list the learning rates in ascending order")
    if enabled and len(lrs) < 3:
        raise UserError(f"{name}.lrs: needs at least three learning rates for a parabola")
