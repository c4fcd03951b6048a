"""Portable job resources (runtime, memory, GPU) of a training job, from the spec it trains.

Every training rule of every phase asks `TrainingResources` (through `training_resources` in
workflow/rules/common.smk), so a cluster sees one consistent rule:

| resource      | value                                                                        |
|---------------|------------------------------------------------------------------------------|
| `runtime`     | margin x FLOPs of the job / throughput, in minutes, times the attempt number |
| `mem_mb`      | fp32 weights, gradients and two Adam moments, doubled, plus a fixed allowance |
| `gpu`         | 1 when `training.device` is `cuda`, else 0                                   |
| `gpu_model`   | `$SCALINGLAB_GPU_MODEL`, for a GPU job only                                  |
| `slurm_extra` | `--signal=USR1@180`: SIGUSR1 three minutes before the time limit            |

The FLOPs of a job are those of its own steps (a stable run's up to its last branch point, a decay
branch's from its decay start) plus its evaluations, read from the series spec that the job
trains (`study.series_spec`), so they are the same whichever phase planned the run. A job killed at
its time limit gets a longer one on its next attempt. Partitions and accounts are not here: they
belong to `workflow/profiles/slurm`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scalinglab.training.spec import RunSpec

MIN_RUNTIME_MINUTES = 10
# SIGUSR1 this many seconds before the time limit (SLURM may send it up to a minute earlier): the
# trainer saves resume.pt and exits, and the next attempt resumes. Well below the shortest runtime.
SIGNAL_LEAD_SECONDS = 180
# `--signal` passes the SLURM plugin's check of slurm_extra; --time, --mem, --gpus and the like
# do not (they come from runtime, mem_mb and gpu)
PREEMPTION_SIGNAL = f"--signal=USR1@{SIGNAL_LEAD_SECONDS}"


def runtime_minutes(flops: float, flops_per_second: float, margin: float,
                    attempt: int = 1) -> int:
    seconds = margin * max(attempt, 1) * flops / flops_per_second
    return max(MIN_RUNTIME_MINUTES, math.ceil(seconds / 60))


def train_mem_mb(n_total: int, processes: int = 1) -> int:
    # 16 bytes per parameter (weight, gradient, two moments), doubled for slack; a data-parallel
    # job holds all of it, and the torch runtime, once per process
    return processes * (1500 + math.ceil(32 * n_total / 2**20))


def gpus(device: str, processes: int = 1) -> int:
    # Only an explicit "cuda" asks the scheduler for a GPU: "auto" must not leave a CPU study
    # waiting in a GPU queue, and a job that asked for a GPU fails rather than train on the CPU.
    # A data-parallel job asks for one GPU per process.
    return processes if device == "cuda" else 0


def gpu_model(device: str, requested: str | None) -> str | None:
    """The GPU model a job asks for: `requested` (blank: any GPU) for a GPU job, never for a CPU
    job (the SLURM plugin would ask for `--gpus=<model>:0`)."""
    model = (requested or "").strip()
    return model if gpus(device) and model else None


# -- the FLOPs of one job, from its series spec ------------------------------------------------
@dataclass(frozen=True)
class TrainingJob:
    """What one training job computes: `flops` (its training steps and evaluations) and the
    parameters `n_total` of its model (memory)."""

    flops: float
    n_total: int


def _job(spec: RunSpec, steps: int, evaluations: int) -> TrainingJob:
    train = spec.training
    per_token = float(spec.flops_per_token)
    tokens = steps * train["batch_size"] * spec.model["block_size"]
    # an evaluation is a forward pass over eval_tokens: a third of a training step's FLOPs
    # (2N of 6N per token)
    eval_tokens = evaluations * train["eval_tokens"]
    return TrainingJob(tokens * per_token + eval_tokens * per_token / 3, int(spec.N_total))


def stable_job(spec: RunSpec | dict) -> TrainingJob:
    """The stable run of a series: `stable_steps` steps, evaluated every `eval_every` steps, at
    each branch point and at the end."""
    spec = RunSpec.of(spec)
    steps = int(spec.stable_steps)
    evaluations = steps // spec.training["eval_every"] + len(spec.branches) + 1
    return _job(spec, steps, evaluations)


def branch_job(spec: RunSpec | dict, label: str) -> TrainingJob:
    """The decay branch `label` of a series: from its decay start to its last step (a cosine run
    trains from step 0), evaluated every `eval_every` steps and at the end."""
    spec = RunSpec.of(spec)
    branch = spec.branch(label)
    if branch is None:
        raise KeyError(f"series {spec.series_id} has no branch {label!r} "
                       f"(branches: {', '.join(b.label for b in spec.branches)})")
    steps = int(branch.total_steps) - int(branch.decay_start)
    return _job(spec, steps, steps // spec.training["eval_every"] + 1)


def training_job(spec: RunSpec | dict, label: str | None = None) -> TrainingJob:
    """The job that trains the series spec `spec`: its stable run, or its branch `label`."""
    return stable_job(spec) if label is None else branch_job(spec, label)


# -- what a training rule asks for -------------------------------------------------------------
@dataclass(frozen=True)
class TrainingResources:
    """The resource settings of a study: `flops_per_second` and `margin` (config `resources`),
    `device` (`training.device`) and the GPU model (`$SCALINGLAB_GPU_MODEL`, blank: any)."""

    flops_per_second: float
    margin: float
    device: str
    requested_gpu_model: str | None = None
    processes: int = 1  # data-parallel processes per job (`resources.gpus_per_run`)

    @classmethod
    def of(cls, cfg, requested_gpu_model: str | None = None) -> TrainingResources:
        """From a `StudyConfig`."""
        return cls(cfg.resources.flops_per_second, cfg.resources.runtime_margin,
                   cfg.training.device, requested_gpu_model, cfg.resources.gpus_per_run)

    def runtime(self, job: TrainingJob, attempt: int = 1) -> int:
        """Minutes."""
        return runtime_minutes(job.flops, self.flops_per_second, self.margin, attempt)

    def mem_mb(self, job: TrainingJob) -> int:
        return train_mem_mb(job.n_total, self.processes)

    @property
    def gpu(self) -> int:
        return gpus(self.device, self.processes)

    @property
    def gpu_model(self) -> str | None:
        return gpu_model(self.device, self.requested_gpu_model)

    @property
    def slurm_extra(self) -> str:
        return PREEMPTION_SIGNAL
