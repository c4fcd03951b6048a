"""The training loop both training jobs (`training.jobs`) share: one model, its optimizer and
data, stepping under a schedule, evaluating, checkpointing and stopping.

Determinism: the data position is the step (batches are a pure function of (seed, step)), the
model has no dropout, and the checkpoint carries the optimizer and RNG states. A job killed and
re-run resumes from its last periodic checkpoint (`resume.pt`) and reaches the same losses.
While it runs, the loop hands each metric row to a `training.live.LiveLog`, which appends it to
`metrics.jsonl.partial`, logs a progress line and feeds the trackers of `training.tracking`.
SIGTERM / SIGUSR1 (sent by SLURM ahead of a time limit) save that checkpoint and exit non-zero so
that the scheduler retries the job.

A run whose loss blows up (`training.divergence`) stops early, its last metric row marked.

Under torchrun the same loop runs data parallel (`training.distributed`): each process trains on
its rows of the global batch, the processes agree on losses and on stopping, and rank 0 alone
writes the checkpoints, which are those of a single process.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from scalinglab.errors import UserError
from scalinglab.model.gpt import GPT
from scalinglab.training import checkpoint, distributed, divergence
from scalinglab.training.batches import TokenData
from scalinglab.training.distributed import World
from scalinglab.training.live import LiveLog
from scalinglab.training.schedule import Schedule
from scalinglab.training.spec import (
    RunSpec,
    build_model,
    build_optimizer,
    computed_spec,
    load_optimizer_state,
)

EXIT_PREEMPTED = 143  # what a process killed by SIGTERM reports; SLURM and Snakemake retry it


@dataclass
class Trainer:
    """One model, its optimizer and data, stepping under a schedule. `spec` may be given as a
    dict (a hand-written spec): it is read with `RunSpec.from_dict`."""

    spec: RunSpec
    data_dir: Path
    device: torch.device
    world: World = field(default_factory=World)
    model: GPT = field(init=False)
    optimizer: torch.optim.AdamW = field(init=False)
    step: int = 0
    elapsed: float = 0.0
    metrics: list[dict] = field(default_factory=list)
    # training loss summed over the steps since the last eval: the metric row reports their mean,
    # and a checkpoint carries it so a resumed run reports the same mean
    interval_loss: float = 0.0
    interval_steps: int = 0
    # the loss of the series' first step (before any update), the divergence rule's start
    initial_loss: float | None = None
    # {"step", "reason"} once the run has diverged (see scalinglab.training.divergence), else None
    divergence: dict | None = None
    # when this job began (time.time()), before loading data: run.json's `started`
    started: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self.spec = RunSpec.of(self.spec)
        meta_path = self.data_dir / "meta.json"
        try:
            self.data_meta = json.loads(meta_path.read_text())
        except FileNotFoundError:
            raise UserError(f"{meta_path}: token metadata not found") from None
        block = self.spec.model["block_size"]
        dtype = self.data_meta["dtype"]
        self.train_data = TokenData(self.data_dir / "train.bin", dtype, block)
        self.val_data = TokenData(self.data_dir / "val.bin", dtype, block)
        self.model = build_model(self.spec, self.device)
        self.optimizer = build_optimizer(self.model, self.spec, self.device)
        train = self.spec.training
        distributed.check_batch(train["batch_size"], self.world.size)
        # DDP and torch.compile wrap the module; checkpoints keep using the plain one's state_dict
        compile_ = torch.compile if train.get("compile") else (lambda module: module)
        moe = self.spec.model.get("mlp") == "moe"
        self.forward = compile_(distributed.wrap(self.model, self.device, self.world, moe))
        # evaluation runs outside DDP: each rank takes its share of the batches, and DDP's
        # forward must only run the same number of times on every rank
        self.eval_forward = compile_(self.model) if self.world.distributed else self.forward
        eval_set = self.val_data.eval_batches(train["batch_size"], train["eval_tokens"])
        self.n_eval = len(eval_set)
        self.eval_set = [(x.to(self.device), y.to(self.device))
                         for x, y in eval_set[self.world.rank::self.world.size]]
        self.batch_tokens = train["batch_size"] * block
        self.autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if self.device.type == "cuda" else contextlib.nullcontext()
        )

    # -- state ----------------------------------------------------------------------------------
    def load(self, path: Path, keep_metrics: bool = True) -> None:
        state = checkpoint.load(path, computed_spec(self.spec), map_location=self.device)
        if "diverged" in state:  # the stable run diverged before this branch point: no weights
            mark = state["diverged"]
            self.divergence = {"step": mark["step"], "reason": "the stable run diverged "
                               f"before this branch point: {mark['reason']}"}
            self.step = mark["step"]
            self.metrics = list(state["metrics"])
            return
        self.model.load_state_dict(state["model"])
        load_optimizer_state(self.optimizer, state["optimizer"])
        checkpoint.restore_rng_state(state["rng"])
        self.step = int(state["step"])
        self.elapsed = float(state["elapsed"])
        if keep_metrics:
            self.metrics = list(state["metrics"])
        else:  # a branch starts its curve at the stable run's eval at the branch point
            self.metrics = [row for row in state["metrics"][-1:] if row["step"] == self.step]
        self.interval_loss, self.interval_steps = state["interval"] if keep_metrics else (0.0, 0)
        self.initial_loss = state.get("initial_loss")

    def save(self, path: Path) -> None:
        if not self.world.is_main:  # the ranks hold the same weights; one file is written
            return
        checkpoint.save(path, model=self.model, optimizer=self.optimizer, step=self.step,
                        metrics=self.metrics, spec=computed_spec(self.spec), elapsed=self.elapsed,
                        interval=(self.interval_loss, self.interval_steps),
                        initial_loss=self.initial_loss)

    # -- one optimizer step -----------------------------------------------------------------------
    def train_step(self, lr_factor: float) -> torch.Tensor:
        train = self.spec.training
        for group in self.optimizer.param_groups:
            group["lr"] = train["lr"] * lr_factor * group["lr_mult"]
        x, y = self.train_data.train_batch(self.step, train["batch_size"], self.spec.seed,
                                           self.world.rank, self.world.size)
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        with self.autocast:
            _, loss = self.forward(x, y)
        loss.backward()
        if train["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), train["grad_clip"])
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return loss.detach()

    @torch.no_grad()
    def evaluate(self) -> float:
        self.model.eval()
        total = torch.zeros((), device=self.device)
        for x, y in self.eval_set:
            with self.autocast:
                _, loss = self.eval_forward(x, y)
            total += loss.float()
        self.model.train()
        if self.world.distributed:  # the mean over all batches, as a single process takes it
            return self.world.sum(float(total)) / self.n_eval
        return float(total / self.n_eval)

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, schedule: Schedule, end_step: int, *, eval_at: set[int] = frozenset(),
            on_step=None, resume_path: Path | None = None, desc: str = "train",
            live: LiveLog | None = None) -> None:
        """Train until `end_step`, evaluating every `eval_every` steps, at `eval_at` and at the
        end; `on_step(trainer)` runs after every step (and before the first one). `live` gets
        the rows so far now and each new row as it is measured.

        Stops early, without calling `on_step` for that step, once the run has diverged
        (`self.divergence` is then set and the last metric row is marked)."""
        train = self.spec.training
        if live is not None:
            live.start(self.metrics, self.step, end_step)
        if on_step:
            on_step(self)
        base_elapsed, run_start = self.elapsed, time.perf_counter()
        # summed on the device: a .item() per step would stall a GPU pipeline
        interval_loss = torch.zeros((), device=self.device, dtype=torch.float64)
        interval_start, steps_timed = time.perf_counter(), 0
        stop = StopRequest()
        with stop, tqdm(total=end_step, initial=self.step, desc=desc, file=sys.stderr,
                        mininterval=10, disable=None if self.world.is_main else True) as bar:
            while self.step < end_step:
                factor = schedule(self.step)
                loss = self.train_step(factor)
                if self.initial_loss is None:  # one host sync, on the series' first step only
                    self.initial_loss = self.world.mean(float(loss))
                interval_loss += loss
                self.interval_steps += 1
                steps_timed += 1
                bar.update(1)
                self.elapsed = base_elapsed + time.perf_counter() - run_start
                if (self.step % train["eval_every"] == 0 or self.step in eval_at
                        or self.step == end_step or self._blown_up(interval_loss)):
                    # tokens/s over the steps since the last eval, the eval itself excluded
                    seconds = time.perf_counter() - interval_start
                    total_loss = self.interval_loss + self.world.mean(float(interval_loss))
                    self._record(factor, total_loss / self.interval_steps,
                                 steps_timed * self.batch_tokens / seconds)
                    if live is not None:
                        live.record(self.metrics[-1])
                    interval_loss.zero_()
                    self.interval_loss, self.interval_steps = 0.0, 0
                    interval_start, steps_timed = time.perf_counter(), 0
                if self.divergence is not None:
                    break  # no branch checkpoint and no resume point from a diverged model
                if on_step:
                    on_step(self)
                # a signal may reach one rank only, or the ranks at different steps
                stopping = self.world.any(stop.requested is not None)
                if resume_path and (self.step % train["checkpoint_every"] == 0 or stopping):
                    self.interval_loss += self.world.mean(float(interval_loss))
                    interval_loss.zero_()
                    self.save(resume_path)
                if stopping:
                    self.world.barrier()  # rank 0 has saved before any rank exits
                    if self.world.is_main:
                        print(f"signal {stop.requested or 'on another rank'}: saved "
                              f"{resume_path} at step {self.step}; exiting so the job is retried",
                              file=sys.stderr)
                    raise SystemExit(EXIT_PREEMPTED)
        self.elapsed = base_elapsed + time.perf_counter() - run_start

    def _blown_up(self, interval_loss: torch.Tensor) -> bool:
        """Between evaluations, every `divergence.CHECK_EVERY` steps: has the training loss
        since the last evaluation already diverged? (If so, the loop evaluates now.)"""
        if self.step % divergence.CHECK_EVERY:
            return False
        mean = (self.interval_loss + self.world.mean(float(interval_loss))) / self.interval_steps
        return divergence.reason(mean, None, self.initial_loss, self.vocab_size) is not None

    @property
    def vocab_size(self) -> int:
        return int(self.spec.model["vocab_size"])

    def _record(self, lr_factor: float, train_loss: float, tokens_per_s: float) -> None:
        tokens = self.step * self.batch_tokens
        val_loss = self.evaluate()
        # every rank has the same losses (averaged across ranks), so every rank stops together
        why = divergence.reason(train_loss, val_loss, self.initial_loss, self.vocab_size)
        if why is not None:
            self.divergence = {"step": self.step, "reason": why}
        self.metrics.append({
            "step": self.step,
            "tokens": tokens,
            "flops": tokens * self.spec.flops_per_token,
            "lr": self.spec.training["lr"] * lr_factor,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "tokens_per_s": tokens_per_s,
            "elapsed": self.elapsed,
            "diverged": why is not None,
            **({"diverged_reason": why} if why is not None else {}),
        })


class StopRequest:
    """Turns SIGTERM/SIGUSR1 into a flag the loop checks between steps."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict = {}

    def __enter__(self):
        for sig in self.SIGNALS:
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        self.requested = signum
