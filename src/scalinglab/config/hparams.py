"""The ``hparams`` section: the LR x batch sweep (`scalinglab.phases.hparams`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from scalinglab.config.fields import check_unique_fields, positive
from scalinglab.errors import UserError


@dataclass(frozen=True)
class HparamsConfig:
    """The LR x batch sweep (off unless `enabled`)."""

    enabled: bool = field(default=False, metadata={"doc": "run the LR x batch sweep phase"})
    budgets: tuple[float, ...] = field(
        default=(), metadata=positive("compute budgets C in FLOPs (at least 2)", unique=True)
    )
    lrs: tuple[float, ...] = field(
        default=(),
        metadata=positive("learning-rate grid shared by every budget, ascending (at least 3)",
                          unique=True),
    )
    batch_tokens: tuple[int, ...] = field(
        default=(),
        metadata=positive("batch sizes in tokens, multiples of model.block_size (at least 2)",
                          unique=True),
    )
    tokens_per_param: float = field(
        default=20.0,
        metadata=positive("each budget trains the ladder size whose D/N is closest to this"),
    )
    near_optimal: float = field(
        default=0.01,
        metadata={"doc": "a run within this fraction of its budget's lowest loss is "
                         "near-optimal (DeepSeek used 0.0025; 0.01 is about two seed-noise "
                         "standard deviations of runs of a few hundred steps)", "min": 0},
    )
    seeds: tuple[int, ...] = field(
        default=(0,),
        metadata={"doc": "init and data-order seeds; the losses of the seeds are averaged",
                  "min_len": 1, "unique": True},
    )

    def __post_init__(self) -> None:
        check_unique_fields(self, "hparams")
        if list(self.lrs) != sorted(self.lrs):
            raise UserError("hparams.lrs: list the learning rates in ascending order")
        if not self.enabled:
            return
        if len(self.budgets) < 2:
            raise UserError(f"hparams.budgets: needs at least 2 budgets for a law in C, got "
                            f"{len(self.budgets)}")
        if len(self.lrs) < 3:
            raise UserError(f"hparams.lrs: needs at least 3 learning rates per budget, got "
                            f"{len(self.lrs)}")
        if len(self.batch_tokens) < 2:
            raise UserError(f"hparams.batch_tokens: needs at least 2 batch sizes, got "
                            f"{len(self.batch_tokens)}")
