"""The ``schedule`` section: WSD with rewind-decay branches, or cosine."""

from __future__ import annotations

from dataclasses import dataclass, field

from scalinglab.config.fields import fraction

SCHEDULE_KINDS = ("wsd", "cosine")
DECAY_SHAPES = ("linear", "cosine", "1-sqrt", "exponential", "multistep")


@dataclass(frozen=True)
class ScheduleConfig:
    kind: str = field(
        default="wsd",
        metadata={"doc": "warmup-stable-decay with rewind branches, or cosine (one run per "
                         "budget)", "choices": SCHEDULE_KINDS},
    )
    decay_fraction: float = field(
        default=0.2, metadata=fraction("share of each branch's steps spent decaying")
    )
    decay_shape: str = field(
        default="linear", metadata={"doc": "shape of the WSD decay", "choices": DECAY_SHAPES}
    )
    final_lr_ratio: float = field(
        default=0.0,
        metadata={"doc": "learning rate at the end of the decay, as a fraction of the peak",
                  "min": 0, "max": 1},
    )
