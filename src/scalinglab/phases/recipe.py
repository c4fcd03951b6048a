"""Prediction: the compute-optimal fit with its loss law, the recipe at the target compute, and
the validation run trained there (`scalinglab.recipe`). The validation run's id and label are
known before the recipe exists; a job writes its spec from the recipe, so the shape is chosen
once the fits are in."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from scalinglab import recipe
from scalinglab.phases.base import Phase, TrainingGroup


@dataclass(frozen=True)
class Recipe(Phase):
    name: str = "recipe"

    def targets(self, cfg):
        return ["results/fits/compute_optimal.json", "results/recipe.json"]


@dataclass(frozen=True)
class Validation(Phase):
    name: str = recipe.PHASE
    section: str = "validation"

    def groups(self, cfg):
        series, label = recipe.validation_ids(cfg)
        table = pd.DataFrame([{"series_id": series, "label": label, "reason": ""}])
        # the last training job of the study: it can have both cores of a small machine
        return [TrainingGroup(self.name, f"results/runs/{self.name}",
                              f"results/specs/{self.name}", table, None, threads=2)]

    def targets(self, cfg):
        if not self.enabled(cfg):
            return []
        return ["results/fits/validation.json", "results/figures/prediction.png"]

    def summary(self, cfg):
        if not self.enabled(cfg):
            return []
        return [f"validation: one run at {recipe.validation_compute(cfg):.3g} FLOPs "
                f"({cfg.validation.compute_factor:g}x the largest fitted budget)"]


@dataclass(frozen=True)
class Downstream(Phase):
    """Accuracy beyond loss (LLaMA 3's second step): the IsoFLOP branches and the validation run
    score themselves on a multiple-choice task; this phase fits the loss -> accuracy sigmoid."""

    name: str = "downstream"
    section: str = "downstream"

    def targets(self, cfg):
        if not self.enabled(cfg):
            return []
        return ["results/fits/downstream.json", "results/figures/downstream.png"]

    def summary(self, cfg):
        ds = cfg.downstream
        if not ds.enabled:
            return []
        scored = "the IsoFLOP branches" + (" and the validation run"
                                           if cfg.validation.enabled else "")
        return [f"downstream: {scored} scored on {ds.items} items x {ds.choices} choices of "
                f"{ds.context_tokens} + {ds.continuation_tokens} tokens from val.bin "
                f"(chance {1 / ds.choices:.3g})"]
