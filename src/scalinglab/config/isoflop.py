"""The ``isoflop`` section: the compute budgets of the base phase and which runs it leaves out."""

from __future__ import annotations

from dataclasses import dataclass, field

from scalinglab.config.fields import positive


@dataclass(frozen=True)
class IsoflopConfig:
    budgets: tuple[float, ...] = field(
        default=(), metadata=positive("compute budgets C in FLOPs", min_len=1)
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
