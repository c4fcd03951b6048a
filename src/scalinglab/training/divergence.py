"""When a training run has diverged, and how that is recorded.

Sweeps at high learning rates diverge. Training then stops early rather than spend the rest of
the budget on a dead run, and the run is marked `diverged`: in its last metric row, in its
`run.json` (with the step and the reason) and, through `metrics.collect`, in `runs.csv`, so that
every fit leaves it out as a failed point and every figure can show it as one.

The rule (`reason`), checked on losses the loop already has on the host:
- the mean training loss since the last check, or the validation loss, is NaN or infinite; or
- the mean training loss exceeds max(initial loss, ln(vocab_size)) + `MARGIN`.
ln(vocab) is the loss of a uniform guess, where a well-initialised model starts (a zero readout
gives it exactly); the initial loss (that of the first step, before any update) covers an
initialisation whose logits start larger. A run one nat above both predicts worse than knowing
nothing, by a factor e in perplexity: everything it learnt is gone. Healthy loss spikes of
language-model training stay far below that, above all in a mean over many steps.

Where it is checked: at every evaluation (which syncs with the device anyway) and, between
evaluations, every `CHECK_EVERY` steps, so a phase that evaluates only at its end (the
LR-transfer runs) still stops soon after it blows up. The per-step path adds no device sync:
losses are summed on the device, a non-finite one keeps the sum non-finite, and the sum is read
at the check points only.
"""

from __future__ import annotations

import math

MARGIN = 1.0
"""Nats above max(initial loss, ln vocab) at which a training loss counts as diverged."""
CHECK_EVERY = 50
"""Steps between checks where no evaluation falls: one host sync per this many steps."""


def reason(train_loss: float, val_loss: float | None, initial_loss: float | None,
           vocab_size: int, margin: float = MARGIN) -> str | None:
    """Why these losses mark a diverged run, or None when they do not. `val_loss` is None
    between evaluations; `initial_loss` is None before the first step is known."""
    for name, value in (("train loss", train_loss), ("val loss", val_loss)):
        if value is not None and not math.isfinite(value):
            return f"{name} is {value}"
    start = max(math.log(vocab_size), -math.inf if initial_loss is None else initial_loss)
    limit = start + margin
    if train_loss > limit:
        return (f"train loss {train_loss:.4g} > {limit:.4g} = max(initial loss, ln vocab) "
                f"+ {margin:g}")
    return None


def record(divergence: dict | None) -> dict:
    """The `run.json` fields of a run: `diverged`, and the step and reason when it did."""
    if divergence is None:
        return {"diverged": False, "diverged_step": None, "diverged_reason": None}
    return {"diverged": True, "diverged_step": int(divergence["step"]),
            "diverged_reason": str(divergence["reason"])}
