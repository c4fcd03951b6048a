"""muP's promise checked: an LR sweep at several widths (`scalinglab.lr_transfer`), one WSD branch
per run, and the coordinate check at initialisation, which trains nothing."""

from __future__ import annotations

from dataclasses import dataclass

from scalinglab import lr_transfer
from scalinglab.phases.base import Phase


@dataclass(frozen=True)
class LrTransfer(Phase):
    name: str = lr_transfer.PHASE
    section: str = "lr_transfer"

    def plan(self, cfg):
        return lr_transfer.plan(cfg)

    def series_spec(self, cfg, table, sid):
        return lr_transfer.series_spec(cfg, table, sid)

    def targets(self, cfg):
        if not self.enabled(cfg):
            return []
        return ["results/muP/lr_transfer_plan.csv", "results/fits/lr_transfer.json",
                "results/figures/lr_transfer.png"]

    def summary(self, cfg):
        table = self.plan(cfg)
        if table.empty:
            return []
        return [f"lr_transfer: {len(table)} runs, {table['C'].sum():.3g} FLOPs"]


@dataclass(frozen=True)
class CoordCheck(Phase):
    name: str = "coord_check"

    def targets(self, cfg):
        return ["results/muP/coord_check.csv", "results/muP/coord_check.json",
                "results/figures/coord_check.png"]
