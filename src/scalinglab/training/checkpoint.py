"""Training checkpoints: everything needed to continue a run exactly, loaded without unpickling.

A checkpoint holds the model and optimizer state, the step (which is also the data position:
batches are a pure function of the step, see `data.TokenData`), the RNG states, the metric rows
so far and a hash of the spec it was made under. It is saved atomically (fsync'ed, then renamed)
and loaded with `weights_only=True`, so a file that someone else wrote can never run code here.

Two kinds of stand-in have the name of a checkpoint and no weights: a placeholder for a branch
that is not trained (`save_placeholder`; loading it is an error), and the mark of a branch point
that the stable run never reached because it diverged first (`save_diverged`; loading it returns
the mark, and the branch finishes at once as diverged, so that the DAG still completes).
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import torch

from scalinglab import atomic
from scalinglab.errors import UserError


def spec_hash(spec: dict, keys: tuple[str, ...] = ("model", "parametrization", "training",
                                                   "schedule", "seed", "warmup_steps")) -> str:
    """Hash of the parts of a spec that change what training computes."""
    subset = {k: spec.get(k) for k in keys}
    return hashlib.sha256(json.dumps(subset, sort_keys=True).encode()).hexdigest()[:16]


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(obj: Any) -> Any:
    if isinstance(obj, list):
        return tuple(_as_tuple(x) for x in obj)
    return obj


def save(path: str | Path, *, model, optimizer, step: int, metrics: list[dict],
         spec: dict, elapsed: float, interval: tuple[float, int] = (0.0, 0),
         initial_loss: float | None = None) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "metrics": metrics,
        "spec_hash": spec_hash(spec),
        "elapsed": elapsed,
        "interval": list(interval),
        # the series' loss before its first update: the divergence rule's starting value
        "initial_loss": initial_loss,
        "rng": rng_state(),
    }
    atomic.write_with(path, lambda tmp: torch.save(state, tmp))


def save_placeholder(path: str | Path, reason: str) -> None:
    """Stand in for the checkpoint of a branch that is not trained (its budget was left out of
    this size's IsoFLOP row), so every series of a phase has the same named outputs."""
    atomic.write_with(path, lambda tmp: torch.save({"placeholder": reason}, tmp))


def save_diverged(path: str | Path, *, spec: dict, step: int, reason: str,
                  metrics: list[dict]) -> None:
    """Stand in for the checkpoint of a branch point that the stable run did not reach: it
    diverged at `step` (see `training.divergence`). Keeps the stable run's last metric row,
    the one marked diverged, for the branch to report."""
    state = {"placeholder": f"the stable run diverged at step {step}",
             "diverged": {"step": int(step), "reason": reason},
             "metrics": metrics[-1:], "spec_hash": spec_hash(spec)}
    atomic.write_with(path, lambda tmp: torch.save(state, tmp))


def load(path: str | Path, spec: dict, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint made under the same spec; a wrong or corrupt file is a UserError.
    A divergence mark (`save_diverged`) is returned as it is: it has a "diverged" key and no
    weights."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: checkpoint not found") from None
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise UserError(f"{path}: not a readable scalinglab checkpoint ({err})") from None
    if "placeholder" in state and "diverged" not in state:
        raise UserError(f"{path}: no checkpoint here, the branch is not trained "
                        f"({state['placeholder']})")
    if state.get("spec_hash") != spec_hash(spec):
        raise UserError(f"{path}: checkpoint was made under a different spec")
    return state
