"""Training: the stable (warmup + constant LR) run of a series and its decay branches.

Both jobs share one loop. The stable run trains to the last branch point and saves a checkpoint at
every branch point; a decay branch loads one and follows the WSD schedule of its own budget, so its
LR trace is exactly that of an uninterrupted WSD run of that length (tests check this).

Determinism: the data position is the step (batches are a pure function of (seed, step)), the
model has no dropout, and the checkpoint carries the optimizer and RNG states. A job killed and
re-run resumes from its last periodic checkpoint (`resume.pt`) and reaches the same losses.
While it runs, a job appends each metric row to `metrics.jsonl.partial`, logs a progress line and
feeds the trackers of `training.tracking` (`training.live`); `metrics.jsonl` is written once, at
the end, complete.
SIGTERM / SIGUSR1 (sent by SLURM ahead of a time limit) save that checkpoint and exit non-zero so
that the scheduler retries the job.

A run whose loss blows up (`training.divergence`) stops early and still writes every output,
marked `diverged`; the stable run marks the branch points it did not reach, and their decay
branches finish at once as diverged, so the workflow completes and the fits leave them out.

Under torchrun the same loop runs data parallel (`training.distributed`): each process trains on
its rows of the global batch, the processes agree on losses and on stopping, and rank 0 alone
writes the outputs and checkpoints, which are those of a single process.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from scalinglab import atomic
from scalinglab.errors import UserError
from scalinglab.model.gpt import GPT, GPTConfig
from scalinglab.model.parametrization import ParametrizationConfig, init_weights, param_groups
from scalinglab.training import checkpoint, distributed, divergence, downstream, provenance
from scalinglab.training.batches import TokenData
from scalinglab.training.distributed import World
from scalinglab.training.live import LiveLog
from scalinglab.training.schedule import Schedule

RESUME_FILE = "resume.pt"
EXIT_PREEMPTED = 143  # what a process killed by SIGTERM reports; SLURM and Snakemake retry it


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


@dataclass
class Trainer:
    """One model, its optimizer and data, stepping under a schedule."""

    spec: dict
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
        meta_path = self.data_dir / "meta.json"
        try:
            self.data_meta = json.loads(meta_path.read_text())
        except FileNotFoundError:
            raise UserError(f"{meta_path}: token metadata not found") from None
        block = self.spec["model"]["block_size"]
        dtype = self.data_meta["dtype"]
        self.train_data = TokenData(self.data_dir / "train.bin", dtype, block)
        self.val_data = TokenData(self.data_dir / "val.bin", dtype, block)
        self.model = build_model(self.spec, self.device)
        self.optimizer = build_optimizer(self.model, self.spec, self.device)
        train = self.spec["training"]
        distributed.check_batch(train["batch_size"], self.world.size)
        # DDP and torch.compile wrap the module; checkpoints keep using the plain one's state_dict
        compile_ = torch.compile if train.get("compile") else (lambda module: module)
        moe = self.spec["model"].get("mlp") == "moe"
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
        self.optimizer.load_state_dict(state["optimizer"])
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
        train = self.spec["training"]
        for group in self.optimizer.param_groups:
            group["lr"] = train["lr"] * lr_factor * group["lr_mult"]
        x, y = self.train_data.train_batch(self.step, train["batch_size"], self.spec["seed"],
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
        train = self.spec["training"]
        if live is not None:
            live.start(self.metrics, self.step, end_step)
        if on_step:
            on_step(self)
        base_elapsed, run_start = self.elapsed, time.perf_counter()
        # summed on the device: a .item() per step would stall a GPU pipeline
        interval_loss = torch.zeros((), device=self.device, dtype=torch.float64)
        interval_start, steps_timed = time.perf_counter(), 0
        stop = _StopRequest()
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
        return int(self.spec["model"]["vocab_size"])

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
            "flops": tokens * self.spec["flops_per_token"],
            "lr": self.spec["training"]["lr"] * lr_factor,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "tokens_per_s": tokens_per_s,
            "elapsed": self.elapsed,
            "diverged": why is not None,
            **({"diverged_reason": why} if why is not None else {}),
        })


class _StopRequest:
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


def _setup(spec_path, data_dir, threads: int) -> tuple[dict, Path, torch.device, World]:
    spec = read_spec(spec_path)
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
    return spec, Path(data_dir), device, distributed.start(device)


def _write_outputs(trainer: Trainer, out_dir: Path, extra: dict) -> None:
    lines = "".join(json.dumps(row) + "\n" for row in trainer.metrics)
    atomic.write_text(out_dir / "metrics.jsonl", lines)
    record = provenance.record(trainer.spec, trainer.data_meta, trainer.device,
                               started=trainer.started)
    record["processes"] = trainer.world.size  # data parallel: the device above, this many times
    record.update(divergence.record(trainer.divergence))
    record.update(extra)
    atomic.write_json(out_dir / "run.json", record)


def _live_log(trainer: Trainer, out_dir: Path, name: str) -> LiveLog | None:
    """The live outputs of the run (`scalinglab.training.live`), on rank 0 only, as every output."""
    if not trainer.world.is_main:
        return None
    return LiveLog(out_dir, name=name, tracking=trainer.spec["training"].get("tracking", ()),
                   config=trainer.spec)


def _downstream_task(trainer: Trainer) -> downstream.Task | None:
    """The downstream task of the spec (`training.downstream`), or None when the spec has it
    off (or, made before it existed, has no `downstream` key)."""
    cfg = downstream.DownstreamConfig(**trainer.spec.get("downstream", {}))
    if not cfg.enabled:
        return None
    return downstream.task_from_file(trainer.val_data.path, trainer.data_meta["dtype"], cfg)


def _final_accuracy(trainer: Trainer, task: downstream.Task | None) -> dict:
    """The accuracy on `task` at the final weights, on rank 0 only: the ranks hold the same
    weights. Null when there is no task and when the run diverged: a failed point has no
    accuracy to fit."""
    if task is None:
        return {"final_accuracy": None, "accuracy_chance": None}
    if trainer.divergence is not None:
        return {"final_accuracy": None, "accuracy_chance": task.chance}
    acc = downstream.accuracy(trainer.model, task, trainer.device, autocast=trainer.autocast)
    return {"final_accuracy": acc, "accuracy_chance": task.chance}


def _resume_if_possible(trainer: Trainer, resume_path: Path) -> None:
    if resume_path.exists():
        try:
            trainer.load(resume_path)
            message = f"resuming from {resume_path} at step {trainer.step}"
        except UserError as err:
            message = f"ignoring {resume_path}: {err}"
        if trainer.world.is_main:
            print(message, file=sys.stderr)


def train_stable(spec_path, data_dir, out_dir, threads: int = 1) -> None:
    """Warmup + constant LR to the last branch point, saving `branch-<label>.pt` at each."""
    spec, data_dir, device, world = _setup(spec_path, data_dir, threads)
    try:
        trainer = Trainer(spec, data_dir, device, world)
        live = _live_log(trainer, Path(out_dir), spec["series_id"])
        try:
            _train_stable(trainer, Path(out_dir), live)
        finally:  # a failed or preempted run keeps its partial rows, for a look
            if live is not None:
                live.close()
    finally:
        distributed.stop(world)


def _train_stable(trainer: Trainer, out_dir: Path, live: LiveLog | None = None) -> None:
    spec = trainer.spec
    out_dir.mkdir(parents=True, exist_ok=True)
    resume_path = out_dir / RESUME_FILE
    _resume_if_possible(trainer, resume_path)
    by_step: dict[int, list[str]] = {}
    beyond_the_end = []
    for branch in spec["branches"]:
        if branch["decay_start"] > spec["stable_steps"]:
            beyond_the_end.append(branch)
        else:
            by_step.setdefault(branch["decay_start"], []).append(branch["label"])

    # Branch checkpoints wait in a folder Snakemake does not know about until the run ends:
    # it deletes the declared outputs of a failed job, and a resumed run cannot remake the
    # checkpoints of branch points it has already passed.
    pending = out_dir / "pending"

    def save_branch_points(t: Trainer) -> None:
        for label in by_step.get(t.step, []):
            t.save(pending / f"branch-{label}.pt")

    if spec["stable_steps"] > 0:
        schedule = make_schedule(spec, spec["stable_steps"], decay_start=None)
        trainer.run(schedule, spec["stable_steps"], eval_at=set(by_step) - {0},
                    on_step=save_branch_points, resume_path=resume_path, desc=spec["series_id"],
                    live=live)
    else:  # cosine baselines: every "branch" trains from the initialisation
        save_branch_points(trainer)
    if not trainer.world.is_main:
        return
    # Training is done: a SIGUSR1/SIGTERM now must not kill the job half-way through its
    # outputs (SIGUSR1's default action), which left resume.pt and no outputs behind.
    stopped = trainer.divergence
    if stopped is not None:
        print(f"warning: {spec['series_id']} diverged at step {stopped['step']} "
              f"({stopped['reason']}); stopped early", file=sys.stderr)
    with _StopRequest():
        for branch in spec["branches"]:
            name = f"branch-{branch['label']}.pt"
            if branch in beyond_the_end:
                checkpoint.save_placeholder(out_dir / name, "left out of the study table")
            elif stopped is not None and branch["decay_start"] >= stopped["step"]:
                # not reached (a diverged step saves no branch checkpoint): the mark lets the
                # branch's job finish at once as diverged instead of failing the workflow
                checkpoint.save_diverged(out_dir / name, spec=computed_spec(spec),
                                         step=stopped["step"], reason=stopped["reason"],
                                         metrics=trainer.metrics)
            else:
                os.replace(pending / name, out_dir / name)
        _write_outputs(trainer, out_dir, {"kind": "stable", "steps": trainer.step,
                                          "wall_seconds": trainer.elapsed})
        if live is not None:  # metrics.jsonl now holds the same rows, complete
            live.finish()
        resume_path.unlink(missing_ok=True)
        shutil.rmtree(pending, ignore_errors=True)


def decay_branch(spec_path, label: str, checkpoint_path, data_dir, out_dir,
                 threads: int = 1) -> None:
    """Load the stable run's checkpoint for `label` and decay to that budget's token count."""
    spec, data_dir, device, world = _setup(spec_path, data_dir, threads)
    try:
        branches = {b["label"]: b for b in spec["branches"]}
        if label not in branches:
            raise UserError(f"branch label {label!r} is not in {spec_path} "
                            f"(known: {', '.join(branches)})")
        trainer = Trainer(spec, data_dir, device, world)
        live = _live_log(trainer, Path(out_dir), f"{spec['series_id']} {label}")
        try:
            _decay_branch(trainer, branches[label], Path(checkpoint_path), Path(out_dir), live)
        finally:
            if live is not None:
                live.close()
    finally:
        distributed.stop(world)


def _decay_branch(trainer: Trainer, branch: dict, checkpoint_path: Path, out_dir: Path,
                  live: LiveLog | None = None) -> None:
    spec, label = trainer.spec, branch["label"]
    out_dir.mkdir(parents=True, exist_ok=True)
    resume_path = out_dir / RESUME_FILE
    task = _downstream_task(trainer)  # a split too small for it fails now, not after training
    trainer.load(checkpoint_path, keep_metrics=False)
    if trainer.divergence is None:  # else the stable run diverged first: nothing to train
        if trainer.step != branch["decay_start"]:
            raise UserError(f"{checkpoint_path}: checkpoint is at step {trainer.step}, "
                            f"branch {label} decays from step {branch['decay_start']}")
        _resume_if_possible(trainer, resume_path)
        schedule = make_schedule(spec, branch["total_steps"], decay_start=branch["decay_start"],
                                 shape=branch.get("decay_shape"))
        trainer.run(schedule, branch["total_steps"], resume_path=resume_path,
                    desc=f"{spec['series_id']} {label}", live=live)
    with _StopRequest():  # as in train_stable: finish the outputs once training is done
        if trainer.divergence is None:
            final = trainer.metrics[-1] if trainer.metrics else {"val_loss": trainer.evaluate()}
            final_loss = final["val_loss"]
        else:  # a failed point has no loss to fit: null, whatever the last eval measured
            final_loss = None
        if not trainer.world.is_main:
            return
        if trainer.divergence is not None:
            print(f"warning: run {branch['run_id']} diverged at step "
                  f"{trainer.divergence['step']} ({trainer.divergence['reason']})",
                  file=sys.stderr)
        _write_outputs(trainer, out_dir, {
            "kind": "branch", "label": label, "run_id": branch["run_id"], "C": branch["C"],
            "D": branch["D"], "steps": trainer.step, "final_val_loss": final_loss,
            "wall_seconds": trainer.elapsed, **_final_accuracy(trainer, task),
        })
        if live is not None:
            live.finish()
        resume_path.unlink(missing_ok=True)
