"""The ``wsd_vs_cosine`` section: WSD branches against cosine runs, each schedule optionally
LR-tuned per budget over `lr_grid` (`scalinglab.phases.wsd_vs_cosine`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from scalinglab.config.fields import check_heads, check_unique_fields, positive
from scalinglab.config.model import SizeConfig
from scalinglab.config.schedule import DECAY_SHAPES
from scalinglab.errors import UserError

ABLATION_SHAPES = tuple(shape for shape in DECAY_SHAPES if shape != "multistep")
"""The decay shapes a branch may take (multistep's steps are not a fraction of a branch)."""


@dataclass(frozen=True)
class WsdVsCosineConfig:
    """The WSD-against-cosine phase (off unless `enabled`)."""

    enabled: bool = field(default=False, metadata={"doc": "run the WSD-vs-cosine phase"})
    sizes: tuple[SizeConfig, ...] = field(
        default=(), metadata={"doc": "model shapes compared (at least 2)", "unique": True}
    )
    budgets: tuple[float, ...] = field(
        default=(), metadata=positive("compute budgets C in FLOPs (at least 2)", unique=True)
    )
    decay_fractions: tuple[float, ...] = field(
        default=(0.2, 0.1, 0.05),
        metadata={"doc": "WSD decay fractions of the branches; the first is the main comparison",
                  "min": 0, "exclusive": True, "max": 1, "min_len": 1, "unique": True},
    )
    decay_shapes: tuple[str, ...] = field(
        default=("linear", "1-sqrt"),
        metadata={"doc": "WSD decay shapes of the branches; the first is the main comparison",
                  "choices": ABLATION_SHAPES, "min_len": 1, "unique": True},
    )
    cosine_final_lr_ratio: float = field(
        default=0.1,
        metadata={"doc": "the cosine runs' final learning rate as a fraction of the peak",
                  "min": 0, "max": 1},
    )
    lr_grid: tuple[float, ...] = field(
        default=(),
        metadata=positive(
            "peak learning rates, ascending (at least 3), each schedule tuned over them per "
            "budget: a cosine run per (budget, LR), a WSD stable run per LR serving every budget; "
            "empty: both schedules at training.lr, untuned", unique=True),
    )
    eval_every: int = field(
        default=25,
        metadata=positive("optimizer steps between validation evaluations (the loss curves)"),
    )

    def __post_init__(self) -> None:
        check_heads(self.sizes, "wsd_vs_cosine.sizes")
        check_unique_fields(self, "wsd_vs_cosine")
        if self.enabled and len(self.sizes) < 2:
            raise UserError(f"wsd_vs_cosine.sizes: needs at least 2 sizes, got {len(self.sizes)}")
        if self.enabled and len(self.budgets) < 2:
            raise UserError(f"wsd_vs_cosine.budgets: needs at least 2 budgets, got "
                            f"{len(self.budgets)}")

        if list(self.lr_grid) != sorted(self.lr_grid):
            raise UserError("wsd_vs_cosine.lr_grid: list the learning rates in ascending order")
        if self.lr_grid and len(self.lr_grid) < 3:
            # a parabola in log LR through the grid minimum needs it and two neighbours
            raise UserError(f"wsd_vs_cosine.lr_grid: needs at least 3 learning rates to tune "
                            f"over, got {len(self.lr_grid)} (or leave it empty: no tuning)")

    @property
    def tuned(self) -> bool:
        return bool(self.lr_grid)

    @property
    def main(self) -> tuple[float, str]:
        return self.decay_fractions[0], self.decay_shapes[0]
