"""Training checkpoints: everything needed to continue a run exactly, loaded without unpickling.

A checkpoint holds the model and optimizer state, the step (which is also the data position:
batches are a pure function of the step, see `data.TokenData`), the RNG states, the metric rows
so far and a hash of the spec it was made under. It is saved atomically and loaded with
`weights_only=True`, so a file that someone else wrote can never run code here.
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
         spec: dict, elapsed: float, interval: tuple[float, int] = (0.0, 0)) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "metrics": metrics,
        "spec_hash": spec_hash(spec),
        "elapsed": elapsed,
        "interval": list(interval),
        "rng": rng_state(),
    }
    atomic.write_with(path, lambda tmp: torch.save(state, tmp))


def save_placeholder(path: str | Path, reason: str) -> None:
    """Stand in for the checkpoint of a branch that is not trained (its budget was left out of
    this size's IsoFLOP row), so every series of a phase has the same named outputs."""
    atomic.write_with(path, lambda tmp: torch.save({"placeholder": reason}, tmp))


def load(path: str | Path, spec: dict, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint made under the same spec; a wrong or corrupt file is a UserError."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: checkpoint not found") from None
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise UserError(f"{path}: not a readable scalinglab checkpoint ({err})") from None
    if "placeholder" in state:
        raise UserError(f"{path}: no checkpoint here, the branch is not trained "
                        f"({state['placeholder']})")
    if state.get("spec_hash") != spec_hash(spec):
        raise UserError(f"{path}: checkpoint was made under a different spec")
    return state
