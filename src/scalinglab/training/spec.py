"""A run's spec (the `run.json` a workflow rule writes) and what a training job makes of it: the
device and its threads, the model, its optimizer and the LR schedule."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from scalinglab.errors import UserError
from scalinglab.model.gpt import GPT, GPTConfig
from scalinglab.model.parametrization import ParametrizationConfig, init_weights, param_groups
from scalinglab.training import distributed
from scalinglab.training.schedule import Schedule


def pick_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("training.device: 'cuda' requested but no CUDA device is available")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(requested)


def read_spec(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: spec file not found") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None


def computed_spec(spec: dict) -> dict:
    """The spec as far as it changes what training computes, for the checkpoints' spec hash:
    `training.tracking` changes only what is recorded, so turning TensorBoard on for a resumed
    run keeps its checkpoint (and a spec from before the key existed hashes as it did)."""
    training = {k: v for k, v in spec["training"].items() if k != "tracking"}
    return {**spec, "training": training}


def job_device(spec: dict, threads: int) -> torch.device:
    """This process's device for the job of `spec` (under torchrun, its rank's), set up: on CPU
    its share of the job's `threads`, on CUDA TF32 matmuls."""
    # before the process group: a bad batch must stop every rank with the same message, not
    # leave the others waiting for it
    processes = distributed.env_world_size()
    distributed.check_batch(spec["training"]["batch_size"], processes)
    device = distributed.local_device(pick_device(spec["training"]["device"]))
    if device.type == "cpu":
        # the processes of one job share its threads
        torch.set_num_threads(max(1, threads // processes))
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def build_model(spec: dict, device: torch.device) -> GPT:
    pcfg = ParametrizationConfig(**spec["parametrization"])
    torch.manual_seed(spec["seed"])
    model = GPT(GPTConfig(**spec["model"]))
    init_weights(model, pcfg, torch.Generator().manual_seed(spec["seed"]))
    return model.to(device)


def build_optimizer(model: GPT, spec: dict, device: torch.device) -> torch.optim.AdamW:
    train = spec["training"]
    pcfg = ParametrizationConfig(**spec["parametrization"])
    groups = param_groups(model, pcfg, train["lr"], train["weight_decay"])
    return torch.optim.AdamW(
        groups, lr=train["lr"], betas=(train["beta1"], train["beta2"]),
        fused=device.type == "cuda",
    )


def make_schedule(spec: dict, total_steps: int, decay_start: int | None,
                  shape: str | None = None) -> Schedule:
    """`shape` overrides the spec's decay shape: a branch may name its own (the stable phase
    before it is the same for every shape, so one stable run serves a decay-shape ablation)."""
    sched = spec["schedule"]
    if sched["kind"] == "cosine":
        return Schedule(kind="cosine", warmup_steps=spec["warmup_steps"], total_steps=total_steps,
                        final_ratio=sched["final_lr_ratio"])
    return Schedule(kind="wsd", warmup_steps=spec["warmup_steps"], total_steps=total_steps,
                    decay_start=decay_start, shape=shape or sched["decay_shape"],
                    final_ratio=sched["final_lr_ratio"])
