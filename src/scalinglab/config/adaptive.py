"""The ``adaptive`` section: the predict-train-adjust loop of the IsoFLOP phase as DAG rounds.

After a round's fit, a Snakemake checkpoint plans extra sizes where a budget's minimum sits at
the edge of its grid or its N_opt interval is wide (`phases.isoflop_rounds`); they train a
stable run and branches like the first round's sizes, and the fit runs again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scalinglab.config.fields import check_heads, positive
from scalinglab.config.model import SizeConfig


@dataclass(frozen=True)
class AdaptiveConfig:
    rounds: int = field(
        default=1,
        metadata={"doc": "refinement rounds after the first fit (0: none; the noise seeds still "
                         "train after the first fit)", "min": 0},
    )
    max_interval_ratio: float = field(
        default=1.5,
        metadata={"doc": "a budget whose N_opt 95% interval is wider than this ratio "
                         "(high / low) asks for a size near its N_opt", "min": 1,
                  "exclusive": True},
    )
    max_new_sizes: int = field(
        default=2, metadata=positive("the most sizes one round adds")
    )
    sizes: tuple[SizeConfig, ...] = field(
        default=(),
        metadata={"doc": "the pool refinement draws its sizes from (n_layer, n_embd, n_head "
                         "each): the candidate nearest in log N to where a budget needs one; "
                         "empty: no size is added"},
    )

    def __post_init__(self) -> None:
        check_heads(self.sizes, "adaptive.sizes")
