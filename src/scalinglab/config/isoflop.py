"""The ``isoflop`` section: the compute budgets of the base phase and which runs it leaves out."""

from __future__ import annotations

from dataclasses import dataclass, field

from scalinglab.config.fields import positive
from scalinglab.errors import UserError


@dataclass(frozen=True)
class IsoflopConfig:
    budgets: tuple[float, ...] = field(
        default=(), metadata=positive("compute budgets C in FLOPs", min_len=1)
    )
    predicted_budgets: tuple[float, ...] = field(
        default=(),
        metadata=positive("budgets that train nothing: each size's branch loss is predicted by "
                          "the schedule law fitted on its trained curves (phases.schedule_law); "
                          "the IsoFLOP fit is reported with and without them"),
    )
    min_steps: int = field(
        default=20,
        metadata=positive("a (size, budget) run with fewer optimizer steps is left out"),
    )
    max_epochs: float = field(
        default=4.0, metadata=positive("most passes over the training tokens any run may make")
    )
    max_tokens_per_param: float = field(
        default=0.0,
        metadata={"doc": "leave out (size, budget) runs with more tokens per non-embedding "
                         "parameter, far left of any IsoFLOP minimum, so small models need not "
                         "train on the largest budgets (0: no limit)", "min": 0},
    )
    window_sizes: int = field(
        default=5,
        metadata={"doc": "Method 2 fits each budget's parabola on at least this many sizes "
                         "nearest its minimum (at least 3; 0: every size of the budget); a "
                         "wide, off-centre grid biases the vertex (arXiv 2603.22339)", "min": 0,
                  "own_check": True},
    )
    window_ratio: float = field(
        default=3.0,
        metadata={"doc": "and every size within this factor of the budget's minimum (a width in "
                         "log N, so that added sizes make the window denser, not narrower; 0: "
                         "the count alone)", "min": 0},
    )
    noise_seeds: int = field(
        default=2,
        metadata={"doc": "extra seeds (init and data order) of the run nearest each budget's "
                         "optimum, trained after the first fit: their spread is the noise floor "
                         "the fits weigh by", "min": 0},
    )

    def __post_init__(self) -> None:
        if self.window_sizes < 0 or 0 < self.window_sizes < 3:
            raise UserError(f"isoflop.window_sizes: a parabola needs a window of at least 3 "
                            f"sizes (0: every size), got {self.window_sizes}")
        if 0 < self.window_ratio <= 1:
            raise UserError(f"isoflop.window_ratio: a factor above 1 (0: the count alone), got "
                            f"{self.window_ratio:g}")
