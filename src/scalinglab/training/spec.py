"""A run's spec (the `results/specs/<phase>/<series>.json` a workflow rule writes) and what a
training job makes of it: the device and its threads, the model, its optimizer and the LR
schedule.

`RunSpec` is the typed spec: the phases build it (`phases.study.series_spec`, then each phase's
edits as `dataclasses.replace`), the workflow writes `RunSpec.to_dict()` and the training jobs read
it back with `read_spec`. The nested sections `model`, `parametrization`, `training`, `schedule`
(and `downstream`, `variant`) stay plain dicts: they are `to_dict` of the config's dataclasses,
read by `GPTConfig(**...)`, `ParametrizationConfig(**...)` and friends.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from scalinglab.errors import UserError
from scalinglab.model.gpt import GPT, GPTConfig
from scalinglab.model.parametrization import ParametrizationConfig, init_weights, param_groups
from scalinglab.training import distributed
from scalinglab.training.adamw import AdamW
from scalinglab.training.schedule import Schedule

# a field's JSON type, by its annotation (the module's annotations are strings)
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "dict": (dict,),
}


def _check(where: str, key: str, value: Any, annotation: str) -> None:
    kind, _, optional = annotation.partition(" | ")
    if optional == "None" and value is None:
        return
    expected = _JSON_TYPES[kind]
    # JSON has no separate bool, but a bool is no count
    if not isinstance(value, expected) or (bool not in expected and isinstance(value, bool)):
        raise UserError(f"{where}: key {key!r} should be {kind}, got {value!r}")


def _fields_of(cls, data: Any, where: str, skip: tuple[str, ...] = ()) -> dict:
    """`data`'s keys checked against the fields of `cls`: every required one present, none
    unknown, each of its JSON type. A spec of another version is named by its bad key."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r} (a spec of another scalinglab "
                        "version? write it again with `write-spec`)")
    for name, f in known.items():
        if name not in data:
            if f.default is None:
                continue
            raise UserError(f"{where}: missing key {name!r} (a spec of another scalinglab "
                            "version? write it again with `write-spec`)")
        if name not in skip:
            _check(where, name, data[name], f.type)
    return dict(data)


@dataclass(frozen=True)
class BranchSpec:
    """One rewind-decay branch of a series: where it leaves the stable run, how long it decays."""

    label: str  # the branch's label, e.g. `C1e+15` (a budget) or `f0.2-linear`
    run_id: str  # the branch's run id, `<series>_<label>`
    C: float  # the FLOP budget it was planned for
    D: int  # the tokens it trains, stable part included
    total_steps: int  # its last step: the decay ends here
    decay_start: int  # the stable run's step it branches from (its checkpoint)
    trained: bool  # False: planned but left out (a reason in the plan), no job decays it
    decay_shape: str | None = None  # its own decay shape; None: the spec's `schedule.decay_shape`

    @classmethod
    def from_dict(cls, data: Any, where: str = "branch") -> BranchSpec:
        return cls(**_fields_of(cls, data, where))

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.decay_shape is None:  # absent, as in the spec files before the key existed
            del out["decay_shape"]
        return out


@dataclass(frozen=True)
class RunSpec:
    """The resolved spec of one series: everything its stable run and its branches need.

    The field order is the spec file's key order (`to_dict`), so that run.json (which keeps the
    order) reads as before.
    """

    series_id: str  # the series' canonical id (`phases.study.series_id`)
    phase: str  # the phase that planned it (`isoflop`, `lr_transfer`, ...)
    seed: int  # seeds the init and the data order
    model: dict  # `GPTConfig` as a dict (`to_dict`)
    parametrization: dict  # `ParametrizationConfig` as a dict: name, base_width, ...
    training: dict  # the study's `training` section as a dict: lr, batch_size, device, ...
    schedule: dict  # the study's `schedule` section as a dict: kind, decay_shape, ...
    schedule_name: str  # the schedule's name in tables and figures (`study.schedule_name`)
    flops_convention: str  # how `flops_per_token` was counted (`flops.convention`)
    N: int  # the parameter count of the fits (non-embedding; active for MoE)
    N_total: int  # every parameter (memory, resources)
    flops_per_token: float  # training FLOPs per token under `flops_convention`
    warmup_steps: int  # LR warmup, in steps
    stable_steps: int  # the stable run's length: its last trained branch point
    branches: tuple[BranchSpec, ...]  # every label of the phase, trained or not
    downstream: dict | None = None  # the downstream task's section; None: not scored (absent)
    variant: dict | None = None  # the variants phase: the variant as configured; else absent
    N_active: int | None = None  # the variants phase: active non-embedding parameters
    N_nonembedding: int | None = None  # the variants phase: every expert's non-embedding count
    round: int | None = None  # the IsoFLOP refinement round that added it; None: the first

    @classmethod
    def from_dict(cls, data: Any, where: str = "spec") -> RunSpec:
        """A spec read from JSON; a missing, unknown or mistyped key is a UserError naming it."""
        values = _fields_of(cls, data, where, skip=("branches",))
        branches = values["branches"]
        if not isinstance(branches, list | tuple):
            raise UserError(f"{where}: key 'branches' should be a list, got {branches!r}")
        values["branches"] = tuple(BranchSpec.from_dict(b, f"{where}: branches[{i}]")
                                   for i, b in enumerate(branches))
        return cls(**values)

    @classmethod
    def of(cls, spec: RunSpec | dict) -> RunSpec:
        """`spec` as a RunSpec (a dict, e.g. a hand-written spec, through `from_dict`)."""
        return spec if isinstance(spec, RunSpec) else cls.from_dict(spec)

    def to_dict(self) -> dict:
        """The spec file's content: today's JSON exactly (the files are rerun triggers), the
        optional keys absent when None."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.default is None and value is None:
                continue
            if f.name == "branches":
                value = [b.to_dict() for b in value]
            out[f.name] = copy.deepcopy(value)
        return out

    def branch(self, label: str) -> BranchSpec | None:
        """The branch `label`, None when the series has none of that label."""
        return next((b for b in self.branches if b.label == label), None)


def pick_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("training.device: 'cuda' requested but no CUDA device is available")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(requested)


def read_spec(path: str | Path) -> RunSpec:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: spec file not found") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    return RunSpec.from_dict(data, where=str(path))


def computed_spec(spec: RunSpec | dict) -> dict:
    """The spec as far as it changes what training computes, for the checkpoints' spec hash:
    `training.tracking` changes only what is recorded, so turning TensorBoard on for a resumed
    run keeps its checkpoint (and a spec from before the key existed hashes as it did)."""
    data = spec.to_dict() if isinstance(spec, RunSpec) else spec
    training = {k: v for k, v in data["training"].items() if k != "tracking"}
    return {**data, "training": training}


def job_device(spec: RunSpec | dict, threads: int) -> torch.device:
    """This process's device for the job of `spec` (under torchrun, its rank's), set up: on CPU
    its share of the job's `threads`, on CUDA TF32 matmuls."""
    # before the process group: a bad batch must stop every rank with the same message, not
    # leave the others waiting for it
    train = RunSpec.of(spec).training
    processes = distributed.env_world_size()
    distributed.check_batch(train["batch_size"], processes)
    device = distributed.local_device(pick_device(train["device"]))
    if device.type == "cpu":
        # the processes of one job share its threads
        torch.set_num_threads(max(1, threads // processes))
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def build_model(spec: RunSpec | dict, device: torch.device) -> GPT:
    spec = RunSpec.of(spec)
    pcfg = ParametrizationConfig(**spec.parametrization)
    torch.manual_seed(spec.seed)
    model = GPT(GPTConfig(**spec.model))
    init_weights(model, pcfg, torch.Generator().manual_seed(spec.seed))
    return model.to(device)


def build_optimizer(model: GPT, spec: RunSpec | dict, device: torch.device):
    """AdamW over the parametrization's groups: torch's fused kernel on CUDA, on CPU the
    same update without torch.optim's import cost (`training.adamw`); both save one layout."""
    spec = RunSpec.of(spec)
    train = spec.training
    pcfg = ParametrizationConfig(**spec.parametrization)
    groups = param_groups(model, pcfg, train["lr"], train["weight_decay"])
    betas = (train["beta1"], train["beta2"])
    if device.type == "cuda":
        return torch.optim.AdamW(groups, lr=train["lr"], betas=betas, fused=True)
    return AdamW(groups, lr=train["lr"], betas=betas)


# how torch runs the update, not what it computes: these belong to the job's device, not to the
# checkpoint (a CPU job saves fused=None, and torch's load_state_dict would keep it on CUDA)
_KERNEL_KEYS = ("fused", "foreach", "capturable")


def load_optimizer_state(optimizer, saved: dict) -> None:
    """Load `saved` (moments, steps, hyperparameters) into `optimizer`, keeping the kernel it
    was built with: a checkpoint saved on a CPU and resumed on CUDA runs the fused kernel."""
    groups = [{**theirs, **{key: ours[key] for key in _KERNEL_KEYS if key in ours}}
              for theirs, ours in zip(saved["param_groups"], optimizer.param_groups,
                                      strict=False)]
    # any groups past ours stay, so that the load refuses a state with other groups
    groups += saved["param_groups"][len(groups):]
    optimizer.load_state_dict({**saved, "param_groups": groups})


def make_schedule(spec: RunSpec | dict, total_steps: int, decay_start: int | None,
                  shape: str | None = None) -> Schedule:
    """`shape` overrides the spec's decay shape: a branch may name its own (the stable phase
    before it is the same for every shape, so one stable run serves a decay-shape ablation)."""
    spec = RunSpec.of(spec)
    sched = spec.schedule
    if sched["kind"] == "cosine":
        return Schedule(kind="cosine", warmup_steps=spec.warmup_steps, total_steps=total_steps,
                        final_ratio=sched["final_lr_ratio"])
    return Schedule(kind="wsd", warmup_steps=spec.warmup_steps, total_steps=total_steps,
                    decay_start=decay_start, shape=shape or sched["decay_shape"],
                    final_ratio=sched["final_lr_ratio"])
