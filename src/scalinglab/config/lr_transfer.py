"""The ``lr_transfer`` section: widths x LRs x parametrizations x seeds
(`scalinglab.phases.lr_transfer`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from scalinglab.config.fields import check_unique_fields, positive
from scalinglab.config.lr_sweep import check_lr_grid, lrs_field, seeds_field, tokens_field
from scalinglab.errors import UserError

SWEPT_PARAMETRIZATIONS = ("sp", "mup")


@dataclass(frozen=True)
class LrTransferConfig:
    """The LR-transfer phase (off unless `enabled`)."""

    enabled: bool = field(default=False, metadata={"doc": "run the LR-transfer phase"})
    parametrizations: tuple[str, ...] = field(
        default=("sp", "mup"),
        metadata={"doc": "parametrizations to sweep (the rest of `parametrization` applies to "
                         "all)", "choices": SWEPT_PARAMETRIZATIONS, "min_len": 1, "unique": True},
    )
    widths: tuple[int, ...] = field(
        default=(),
        metadata=positive("model widths n_embd; under muP multiples of "
                          "parametrization.base_width", unique=True),
    )
    n_layer: int = field(default=2, metadata=positive("blocks of every model of the phase"))
    n_head: int = field(
        default=2,
        metadata=positive("heads at every width (fixed, so d_head grows with width and muP's "
                          "1/d_head attention rule is exercised)"),
    )
    lrs: tuple[float, ...] = lrs_field()
    seeds: tuple[int, ...] = seeds_field()
    tokens: int = tokens_field()

    def __post_init__(self) -> None:
        # checks within the section; those against other sections are in
        # `scalinglab.phases.lr_transfer.check_config`
        check_unique_fields(self, "lr_transfer")
        for i, width in enumerate(self.widths):
            if width % self.n_head:
                raise UserError(f"lr_transfer.widths[{i}]: n_head={self.n_head} does not "
                                f"divide width {width}")
        if self.enabled and len(self.widths) < 2:
            raise UserError("lr_transfer.widths: needs at least two widths to measure a slope")
        check_lr_grid(self.lrs, self.enabled, "lr_transfer")
