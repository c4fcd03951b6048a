"""The ``critical_batch`` section: one model, several batch sizes (`phases.critical_batch`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from scalinglab.config.fields import check_unique_fields, positive
from scalinglab.errors import UserError


@dataclass(frozen=True)
class CriticalBatchConfig:
    """The critical-batch phase (off unless `enabled`)."""

    enabled: bool = field(default=False, metadata={"doc": "run the critical-batch phase"})
    n_layer: int = field(default=2, metadata=positive("blocks of the model"))
    n_embd: int = field(default=32, metadata=positive("width of the model"))
    n_head: int = field(default=2, metadata=positive("heads of the model (divides n_embd)"))
    lr: float | None = field(
        default=None,
        metadata=positive("constant learning rate after warmup (null means training.lr)"),
    )
    batch_tokens: tuple[int, ...] = field(
        default=(),
        metadata=positive("batch sizes in tokens, multiples of model.block_size (at least 3)",
                          unique=True),
    )
    steps: int = field(
        default=400, metadata=positive("the steps budget, the optimizer steps of every run")
    )
    losses: tuple[float, ...] = field(
        default=(),
        metadata=positive("target losses (empty means n_losses levels chosen from the curves)",
                          unique=True),
    )
    n_losses: int = field(
        default=6,
        metadata={"doc": "number of target losses chosen when `losses` is empty", "min": 2},
    )
    eval_every: int = field(
        default=20, metadata=positive("optimizer steps between validation evaluations")
    )
    eval_tokens: int = field(default=8192, metadata=positive("validation tokens per evaluation"))

    def __post_init__(self) -> None:
        check_unique_fields(self, "critical_batch")
        if self.n_embd % self.n_head:
            raise UserError(f"critical_batch.n_head: {self.n_head} does not divide "
                            f"n_embd={self.n_embd}")
        if self.enabled and len(self.batch_tokens) < 3:
            raise UserError(f"critical_batch.batch_tokens: needs at least 3 batch sizes, got "
                            f"{len(self.batch_tokens)}")
