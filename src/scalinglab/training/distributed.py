"""Data parallel inside one job: the K processes of one training run, started by torchrun.

A training job with `resources.gpus_per_run: K > 1` runs `python -m scalinglab VERB ...
--processes K`, which replaces itself (`relaunch`) with `launcher(K) VERB ...`, i.e.
`torchrun --standalone --nproc-per-node K -m scalinglab VERB ...`: K copies of the verb with RANK,
LOCAL_RANK and WORLD_SIZE set. Each copy wraps the model in DistributedDataParallel
(NCCL on CUDA, gloo on the CPU) and takes the rows `rank::K` of every step's global batch, so the
global batch, the data order and (up to the order of floating-point sums) the losses are those of a
single process; a test checks this with gloo and 2 processes.

The processes agree through gloo on the host (a second group beside NCCL on CUDA, so that no
agreement waits on a CUDA stream) on the training and validation losses of a metric row (the mean
over ranks), and each step on whether any of them got a stop signal, so that all of them save and
exit at the same step. Only
rank 0 writes files; every rank reads checkpoints, which hold the unwrapped model and are the same
files as a single process's.

Without WORLD_SIZE (a plain `python -m scalinglab VERB`) `World()` is one process and every
method is a no-op on its argument.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import torch

from scalinglab.config.resources import check_batch
from scalinglab.errors import UserError

# torchrun turns these signals into a shutdown that sends the same signal to every worker. SIGUSR1
# (SLURM's warning ahead of a time limit, see workflow/profiles/slurm) is not among its defaults:
# without it, SIGUSR1 kills torchrun itself, and its workers lose their rendezvous before they save.
FORWARDED_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
# seconds torchrun gives the workers to save resume.pt after a signal before it kills them; well
# inside the 180 s between SLURM's SIGUSR1 and the time limit (workflow/profiles/slurm)
SHUTDOWN_SECONDS = 120


def launcher(processes: int) -> str:
    """The command that starts a training verb: `python -m scalinglab` for one process,
    torchrun on the loopback (`--standalone`: a free port, no rendezvous server) for more."""
    if processes == 1:
        return "python -m scalinglab"
    return (f"python -m torch.distributed.run --standalone --nproc-per-node {processes}"
            f" --signals-to-handle {FORWARDED_SIGNALS} --shutdown-timeout {SHUTDOWN_SECONDS}"
            " -m scalinglab")


def torchrun_argv(processes: int, verb_argv: list[str]) -> list[str]:
    """The argv that runs `python -m scalinglab VERB_ARGV` as `processes` torchrun workers."""
    return [sys.executable, *launcher(processes).split()[1:], *verb_argv]


def relaunch(processes: int, verb_argv: list[str], batch_size: int) -> None:
    """Replace this process with torchrun starting `processes` workers of the same verb. The
    job's PID becomes torchrun's, so SLURM's signal reaches the process that forwards it. The
    batch is checked first: a worker's error would reach the user inside torchrun's traceback."""
    check_batch(batch_size, processes)
    argv = torchrun_argv(processes, verb_argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)


def env_world_size() -> int:
    """WORLD_SIZE as torchrun sets it; 1 when the process was started without it."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        size = int(value)
    except ValueError:
        raise UserError(f"WORLD_SIZE={value!r} is not an integer") from None
    if size < 1:
        raise UserError(f"WORLD_SIZE={size} must be >= 1")
    return size


@dataclass(frozen=True)
class World:
    """The processes of one run; the default is a single process."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    # gloo group for host-side values: a reduction there never waits on a CUDA stream
    control: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def sum(self, value: float) -> float:
        if not self.distributed:
            return value
        import torch.distributed as dist

        total = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=self.control)
        return float(total.item())

    def mean(self, value: float) -> float:
        return self.sum(value) / self.size

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one: a stop signal stops all of them."""
        return self.sum(float(flag)) > 0 if self.distributed else flag

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier(group=self.control)


def start(device: torch.device) -> World:
    """Join the process group torchrun set up the environment for (a no-op without one)."""
    size = env_world_size()
    if size == 1:
        return World()
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        dist.init_process_group("nccl", device_id=device)
        control = dist.new_group(backend="gloo")
    else:
        dist.init_process_group("gloo")
        control = None  # the default group is gloo already
    return World(rank=rank, size=size, local_rank=local_rank, control=control)


def stop(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        dist.destroy_process_group()


def local_device(requested: torch.device) -> torch.device:
    """Under torchrun each process takes the GPU of its LOCAL_RANK."""
    if requested.type != "cuda" or env_world_size() == 1:
        return requested
    index = int(os.environ.get("LOCAL_RANK", "0"))
    if index >= torch.cuda.device_count():
        raise UserError(f"resources.gpus_per_run: process {index} has no GPU of its own "
                        f"({torch.cuda.device_count()} visible)")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def wrap(model: torch.nn.Module, device: torch.device, world: World,
         find_unused: bool = False) -> torch.nn.Module:
    """DistributedDataParallel around `model` for more than one process, else the model.

    `find_unused`: an MoE expert that gets no token of this rank's rows has no gradient here,
    and DDP must be told to expect that."""
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    # GPT has no buffers, so DDP has none to broadcast before a forward
    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=find_unused)
