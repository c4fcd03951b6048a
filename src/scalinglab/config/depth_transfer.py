"""The ``depth_transfer`` section: depths x LRs x parametrizations x seeds at one width
(`scalinglab.phases.depth_transfer`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from scalinglab.config.fields import check_unique_fields, positive
from scalinglab.config.lr_sweep import check_lr_grid, lrs_field, seeds_field, tokens_field
from scalinglab.errors import UserError

DEPTH_PARAMETRIZATIONS = ("mup", "completep")
MIN_DEPTHS = 3


@dataclass(frozen=True)
class DepthTransferConfig:
    """The depth-transfer phase (off unless `enabled`)."""

    enabled: bool = field(default=False, metadata={"doc": "run the depth-transfer phase"})
    parametrizations: tuple[str, ...] = field(
        default=DEPTH_PARAMETRIZATIONS,
        metadata={"doc": "parametrizations to sweep: width-only muP against CompleteP (the "
                         "rest of `parametrization`, base_depth and alpha included, applies to "
                         "both)", "choices": DEPTH_PARAMETRIZATIONS, "min_len": 1,
                  "unique": True},
    )
    depths: tuple[int, ...] = field(
        default=(),
        metadata=positive("numbers of blocks n_layer, at least three, ascending (>= 4x apart "
                          "for the transfer verdict); under CompleteP each >= "
                          "parametrization.base_depth", unique=True),
    )
    n_embd: int = field(
        default=32,
        metadata=positive("the width of every model of the phase (a multiple of "
                          "parametrization.base_width)"),
    )
    n_head: int = field(default=2, metadata=positive("heads at every depth"))
    lrs: tuple[float, ...] = lrs_field()
    seeds: tuple[int, ...] = seeds_field()
    tokens: int = tokens_field()

    def __post_init__(self) -> None:
        # checks within the section; those against other sections are in
        # `scalinglab.phases.depth_transfer.check_config`
        check_unique_fields(self, "depth_transfer")
        if list(self.depths) != sorted(self.depths):
            raise UserError("depth_transfer.depths: list the depths in ascending order")
        if self.n_embd % self.n_head:
            raise UserError(f"depth_transfer.n_head: {self.n_head} does not divide n_embd "
                            f"{self.n_embd}")
        if self.enabled and len(self.depths) < MIN_DEPTHS:
            raise UserError(f"depth_transfer.depths: needs at least {MIN_DEPTHS} depths, got "
                            f"{len(self.depths)}")
        check_lr_grid(self.lrs, self.enabled, "depth_transfer")
