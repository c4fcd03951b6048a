"""Portable job resources (runtime, memory) estimated from a run's size and FLOPs.

Every training rule of every phase asks these functions, so a cluster sees one consistent rule:
runtime = margin × FLOPs / throughput (more on each retry, so a job killed at its time limit gets
longer next time), memory = fp32 weights, gradients and two Adam moments plus a fixed allowance
for activations and the torch runtime. Partitions, accounts and GPU models are not here: they
belong to `workflow/profiles/slurm`.
"""

from __future__ import annotations

import math

MIN_RUNTIME_MINUTES = 10


def runtime_minutes(flops: float, flops_per_second: float, margin: float,
                    attempt: int = 1) -> int:
    seconds = margin * max(attempt, 1) * flops / flops_per_second
    return max(MIN_RUNTIME_MINUTES, math.ceil(seconds / 60))


def train_mem_mb(n_total: int, processes: int = 1) -> int:
    # 16 bytes per parameter (weight, gradient, two moments), doubled for slack; a data-parallel
    # job holds all of it, and the torch runtime, once per process
    return processes * (1500 + math.ceil(32 * n_total / 2**20))
