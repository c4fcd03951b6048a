"""Architecture variants (MoE on active parameters, linear attention) or parametrizations (SP
against muP) compared by their scaling curves (`scalinglab.variants`). Every file name follows
from `variants.name`, so one study can hold several such comparisons."""

from __future__ import annotations

from dataclasses import dataclass

from scalinglab import variants
from scalinglab.phases.base import Phase


@dataclass(frozen=True)
class Variants(Phase):
    name: str = "variant"
    section: str = "variants"

    def folder(self, cfg):
        return cfg.variants.name

    def plan(self, cfg):
        return variants.plan(cfg)

    def series_spec(self, cfg, table, sid):
        return variants.series_spec(cfg, table, sid)

    def groups(self, cfg):
        table = self.plan(cfg)
        if table.empty:
            return []
        files = variants.PhaseFiles(cfg, table)
        return [self.group(cfg, table, threads=None, plan=f"{files.tables_dir}/plan.csv")]

    def targets(self, cfg):
        return variants.PhaseFiles(cfg, self.plan(cfg)).targets

    def summary(self, cfg):
        table = self.plan(cfg)
        if table.empty:
            return []
        kept = table[table["reason"] == ""]
        return [f"variants ({cfg.variants.name}): {len(kept)} branches to train, "
                f"{kept['C_actual'].sum():.3g} FLOPs "
                f"({variants.training_flops(cfg, table):.3g} trained: the branches share "
                "their series' stable run)"]
