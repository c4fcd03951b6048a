"""The ``downstream`` section: the multiple-choice task from val.bin (`training.downstream`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from scalinglab.config.fields import positive
from scalinglab.errors import UserError


@dataclass(frozen=True)
class DownstreamConfig:
    """The downstream task the IsoFLOP branches and the validation run are scored on (off unless
    `enabled`)."""

    enabled: bool = field(
        default=False,
        metadata={"doc": "score the IsoFLOP branches and the validation run on the task and fit "
                         "the sigmoid (fits/downstream.json)"},
    )
    items: int = field(
        default=400,
        metadata=positive("questions, evenly spaced non-overlapping spans of val.bin (at least "
                          "choices)"),
    )
    context_tokens: int = field(
        default=64,
        metadata=positive("tokens of each item's context (context_tokens + continuation_tokens "
                          "<= model.block_size)"),
    )
    continuation_tokens: int = field(
        default=16, metadata=positive("tokens of each candidate continuation")
    )
    choices: int = field(
        default=4,
        metadata={"doc": "candidates per item, the true continuation and those of items far "
                         "away in the file (chance = 1 / choices)", "min": 2},
    )

    def __post_init__(self) -> None:
        if self.choices < 2:
            raise UserError(f"downstream.choices: must be >= 2, got {self.choices}")
        for key in ("items", "context_tokens", "continuation_tokens"):
            if getattr(self, key) <= 0:
                raise UserError(f"downstream.{key}: must be > 0, got {getattr(self, key)}")
        if self.items < self.choices:
            raise UserError(f"downstream.items: {self.items} items cannot give "
                            f"{self.choices} choices from other items")

    @property
    def span(self) -> int:
        return self.context_tokens + self.continuation_tokens


def check_block_size(cfg: DownstreamConfig, block_size: int) -> None:
    """An item must fit in the model's context (checked where the whole study is known)."""
    if cfg.enabled and cfg.span > block_size:
        raise UserError(f"downstream.context_tokens: context_tokens + continuation_tokens = "
                        f"{cfg.context_tokens} + {cfg.continuation_tokens} exceeds "
                        f"model.block_size={block_size}")
