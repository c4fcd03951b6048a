"""The ``validation`` section: the recipe's run beyond every fitted budget (`phases.recipe`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ValidationConfig:
    """The validation run at a compute beyond every fitted budget (off unless `enabled`)."""

    enabled: bool = field(
        default=False, metadata={"doc": "train the validation run (the recipe is made either way)"}
    )
    compute_factor: float = field(
        default=4.0,
        metadata={"doc": "the validation run's compute over the largest budget any fit used",
                  "min": 1},
    )
