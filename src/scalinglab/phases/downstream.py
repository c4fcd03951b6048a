"""Accuracy beyond loss (LLaMA 3's second step) as a phase: the IsoFLOP branches and the
validation run score themselves on a multiple-choice task (scalinglab.training.downstream), and
this phase fits the loss -> accuracy sigmoid the recipe uses."""

from __future__ import annotations

from dataclasses import dataclass

from scalinglab.phases.base import Phase, Step


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

    def steps(self, cfg, groups):
        return [Step("fit_downstream", "downstream fit --runs {input.runs} --out {output.fit}"
                     " --figure {output.figure}",
                     inputs={"runs": "results/metrics/runs.csv"},
                     outputs={"fit": "results/fits/downstream.json"},
                     figures={"figure": ("results/figures/downstream.png", "downstream.rst",
                                         "Downstream accuracy")})]

    def summary(self, cfg):
        ds = cfg.downstream
        if not ds.enabled:
            return []
        scored = "the IsoFLOP branches" + (" and the validation run"
                                           if cfg.validation.enabled else "")
        return [f"downstream: {scored} scored on {ds.items} items x {ds.choices} choices of "
                f"{ds.context_tokens} + {ds.continuation_tokens} tokens from val.bin "
                f"(chance {1 / ds.choices:.3g})"]
