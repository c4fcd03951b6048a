"""The ``paper`` section: optional inputs of the published-paper figures."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PaperConfig:
    epoch_csv: str | None = field(
        default=None,
        metadata={"doc": "path to your copy of Epoch AI's Chinchilla points "
                         "(svg_extracted_data.csv); adds the results/figures/paper/epoch_refit.png "
                         "target (not shipped: the data has no licence)"},
    )
