"""The ``resources`` section: hardware, not study, and the batch split it implies."""

from __future__ import annotations

from dataclasses import dataclass, field

from scalinglab.config.fields import positive
from scalinglab.errors import UserError

BRANCH_JOBS = ("branch", "series")


@dataclass(frozen=True)
class ResourcesConfig:
    """Hardware, not study: only how a job runs (its runtime on a cluster, its processes)
    depends on it (set it per machine, e.g. in a profile's `config:` or with `--config`)."""

    flops_per_second: float = field(
        default=2e9,
        metadata=positive("sustained training FLOP/s of one job (about 2e9 for a CPU core, 2e14 "
                          "for an H100 in bf16)"),
    )
    runtime_margin: float = field(
        default=3.0,
        metadata=positive("runtime = margin x FLOPs / flops_per_second, times the attempt number "
                          "on a retry"),
    )
    gpus_per_run: int = field(
        default=1,
        metadata=positive(
            "data-parallel processes per IsoFLOP and variants training job, started by torchrun "
            "with DDP; each takes batch_size / gpus_per_run rows of every step (batch_size must "
            "be divisible by it). With training.device cuda a job asks the scheduler for this "
            "many GPUs (gpu resource), on the CPU the processes share the job's threads (gloo). "
            "Hardware, not study: changing it retrains nothing, and the checkpoints are the "
            "same files"),
    )

    branch_jobs: str = field(
        default="branch",
        metadata={"doc": "branch: one job per decay branch, so a cluster runs a series' branches "
                         "side by side; series: one job per series decays its branches in turn, "
                         "each started from its own checkpoint exactly as its own job would, "
                         "which spares every branch the start of Python and torch (about 2 s, "
                         "a third of a short branch on a 2-core CPU). A refinement round's series "
                         "are planned while the workflow runs: their one rule names every label, "
                         "and each job writes placeholders (`trained: false`) for the branches "
                         "its plan leaves out. On a cluster set branch (docs/slurm.md). The "
                         "outputs are the same files, "
                         "but switching reruns the branches once (--rerun-triggers mtime keeps "
                         "them)",
                  "choices": BRANCH_JOBS},
    )


def check_batch(batch_size: int, processes: int) -> None:
    """Every process takes the same number of rows of a step's batch."""
    if batch_size % processes:
        raise UserError(
            f"resources.gpus_per_run: training.batch_size={batch_size} is not divisible by "
            f"{processes} data-parallel processes")
