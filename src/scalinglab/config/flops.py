"""The ``flops`` section: which FLOPs per token a budget counts (`scalinglab.model.flops`)."""

from __future__ import annotations

from dataclasses import dataclass, field

CONVENTIONS = ("6N", "6N+attn", "6N+attn+head")


@dataclass(frozen=True)
class FlopsConfig:
    convention: str = field(
        default="6N+attn+head",
        metadata={"doc": "training FLOPs per token", "choices": CONVENTIONS},
    )
