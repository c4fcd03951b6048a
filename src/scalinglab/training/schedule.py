"""Learning-rate schedules as pure functions of the optimizer step.

`step` is the 0-based index of the optimizer update; the factor multiplies the peak learning
rate for that update (each group then also applies its parametrization `lr_mult`).

Warmup: factor (step + 1) / warmup_steps for step < warmup_steps, so the first update already
moves and update warmup_steps - 1 runs at the peak.

WSD (warmup-stable-decay; Hu et al., MiniCPM, arXiv:2404.06395; Hägele et al.,
arXiv:2405.18392): warmup, then 1.0, then from `decay_start` a decay that reaches `final_ratio`
on the last update (step total_steps - 1). With progress p = (step + 1 - decay_start) /
(total_steps - decay_start), in (0, 1] over the decay, and r = final_ratio:

    linear        r + (1 - r) * (1 - p)
    cosine        r + (1 - r) * (1 + cos(pi * p)) / 2
    1-sqrt        r + (1 - r) * (1 - sqrt(p))                    (Hägele et al.)
    exponential   floor ** p, floor = r, or EXPONENTIAL_FLOOR = 0.01 when r = 0 (an exponential
                  never reaches 0, so r = 0 would mean no decay at all)
    multistep     DeepSeek LLM (arXiv:2401.02954): 1.0 until 80% of total_steps, 0.316 from
                  80%, 0.1 from 90% (a step s is "from x%" when s >= ceil(x% * total_steps)).
                  Its decay must start at the 80% point, which `decay_start_step` returns for
                  this shape whatever the fraction; r is not used.

The warmup and decay factors multiply, which only matters for budgets so small that the decay
starts inside the warmup. `decay_start=None` is the stable run: warmup then 1.0 forever.

Rewind-decay branches: a stable run of the largest budget saves a checkpoint at each budget's
`decay_start_step(T, fraction)`; the branch for budget T resumes there and follows
Schedule("wsd", warmup, T, decay_start_step(T, fraction), shape). Because the stable run's
factors equal the T-step WSD run's before that step (warmup does not depend on total_steps)
and the branch's factors are the T-step run's own, the branch's LR trace is exactly that of
an uninterrupted T-step WSD run. tests/test_schedule.py checks this.

Cosine (for baselines): warmup, then a half cosine from the peak to final_ratio on the last
update; it is WSD with decay_start = warmup_steps and shape "cosine".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from scalinglab.config.schedule import DECAY_SHAPES, SCHEDULE_KINDS
from scalinglab.errors import UserError

EXPONENTIAL_FLOOR = 0.01
# DeepSeek LLM's multi-step schedule: (fraction of total_steps, factor from there on)
MULTISTEP = ((Fraction(8, 10), 0.316), (Fraction(9, 10), 0.1))


def _check(shape: str, warmup_steps: int, total_steps: int, final_ratio: float) -> None:
    if shape not in DECAY_SHAPES:
        raise UserError(
            f"schedule.decay_shape: unknown {shape!r}; expected one of " + ", ".join(DECAY_SHAPES)
        )
    if warmup_steps < 0:
        raise UserError(f"schedule.warmup_steps: must be >= 0, got {warmup_steps}")
    if total_steps < 1:
        raise UserError(f"schedule.total_steps: must be >= 1, got {total_steps}")
    if not 0.0 <= final_ratio <= 1.0:
        raise UserError(f"schedule.final_ratio: must be in [0, 1], got {final_ratio}")


def _multistep_from(total_steps: int, fraction: Fraction) -> int:
    """First step at or past `fraction` of total_steps, in exact arithmetic."""
    return math.ceil(fraction * total_steps)


def _warmup(step: int, warmup_steps: int) -> float:
    return 1.0 if step >= warmup_steps else (step + 1) / warmup_steps


def _decay(progress: float, shape: str, final_ratio: float) -> float:
    r = final_ratio
    if shape == "linear":
        return r + (1.0 - r) * (1.0 - progress)
    if shape == "cosine":
        return r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if shape == "1-sqrt":
        return r + (1.0 - r) * (1.0 - math.sqrt(progress))
    if shape == "exponential":
        return (r if r > 0 else EXPONENTIAL_FLOOR) ** progress
    raise AssertionError(shape)  # multistep is handled by wsd_factor


def wsd_factor(
    step: int,
    *,
    warmup_steps: int,
    total_steps: int,
    decay_start: int | None,
    shape: str = "linear",
    final_ratio: float = 0.0,
) -> float:
    """LR factor of update `step` of a WSD run of `total_steps` updates (see module docstring).
    Steps at or past the end keep the last factor."""
    _check(shape, warmup_steps, total_steps, final_ratio)
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    factor = _warmup(step, warmup_steps)
    if decay_start is None:
        return factor
    if shape == "multistep":
        start = _multistep_from(total_steps, MULTISTEP[0][0])
        if decay_start != start:
            raise ValueError(
                f"multistep decays from 80% of total_steps={total_steps} (step {start}), "
                f"not from decay_start={decay_start}; use decay_start_step()"
            )
        level = 1.0
        for fraction, value in MULTISTEP:
            if step >= _multistep_from(total_steps, fraction):
                level = value
        return factor * level
    if not 0 <= decay_start < total_steps:
        raise ValueError(f"decay_start={decay_start} must be in [0, total_steps={total_steps})")
    if step >= decay_start:
        progress = min(1.0, (step + 1 - decay_start) / (total_steps - decay_start))
        factor *= _decay(progress, shape, final_ratio)
    return factor


def decay_start_step(total_steps: int, decay_fraction: float, shape: str = "linear") -> int:
    """The step where the decay of a `total_steps` WSD run begins: the last
    round(decay_fraction * total_steps) updates decay (at least one; halves round up).
    For "multistep" it is the 80% point whatever the fraction."""
    _check(shape, 0, total_steps, 0.0)
    if not 0.0 < decay_fraction <= 1.0:
        raise UserError(f"schedule.decay_fraction: must be in (0, 1], got {decay_fraction}")
    if shape == "multistep":
        return _multistep_from(total_steps, MULTISTEP[0][0])
    n_decay = max(1, math.floor(decay_fraction * total_steps + 0.5))
    return total_steps - n_decay


def cosine_factor(
    step: int, *, warmup_steps: int, total_steps: int, final_ratio: float = 0.1
) -> float:
    """LR factor of a warmup + cosine run that reaches `final_ratio` on its last update."""
    if warmup_steps >= total_steps:
        raise UserError(
            f"schedule.warmup_steps: {warmup_steps} leaves no room for a cosine over "
            f"total_steps={total_steps}"
        )
    return wsd_factor(
        step,
        warmup_steps=warmup_steps,
        total_steps=total_steps,
        decay_start=warmup_steps,
        shape="cosine",
        final_ratio=final_ratio,
    )


@dataclass(frozen=True)
class Schedule:
    """One run's LR schedule, picklable and JSON-friendly (`dataclasses.asdict`);
    `schedule(step)` is the factor of update `step`."""

    kind: str
    """"wsd" or "cosine"."""
    warmup_steps: int
    """Updates of linear warmup."""
    total_steps: int
    """Updates in the run (for a stable run: the largest budget it serves)."""
    decay_start: int | None = None
    """WSD only: first step of the decay; None for a stable run (no decay)."""
    shape: str = "linear"
    """WSD only: one of DECAY_SHAPES."""
    final_ratio: float = 0.0
    """Factor reached on the last update (unused by multistep)."""

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise UserError(
                f"schedule.kind: unknown {self.kind!r}; expected one of "
                + ", ".join(SCHEDULE_KINDS)
            )
        self(0)  # validates the remaining fields

    def __call__(self, step: int) -> float:
        if self.kind == "cosine":
            return cosine_factor(
                step,
                warmup_steps=self.warmup_steps,
                total_steps=self.total_steps,
                final_ratio=self.final_ratio,
            )
        return wsd_factor(
            step,
            warmup_steps=self.warmup_steps,
            total_steps=self.total_steps,
            decay_start=self.decay_start,
            shape=self.shape,
            final_ratio=self.final_ratio,
        )
