"""The two training jobs of a series: the stable (warmup + constant LR) run and its decay branches,
with the outputs each writes.

Both jobs run the same loop (`training.trainer.Trainer`). The stable run trains to the last
branch point and saves a checkpoint at every branch point; a decay branch loads one and follows
the WSD schedule of its own budget, so its LR trace is exactly that of an uninterrupted WSD run of
that length (tests check this). A job re-run after it was killed resumes from its `resume.pt`.
While it runs, a job writes its live outputs (`training.live`); `metrics.jsonl` is written once,
at the end, complete, next to `run.json` (`training.provenance`).

A run whose loss blows up (`training.divergence`) stops early and still writes every output,
marked `diverged`; the stable run marks the branch points it did not reach, and their decay
branches finish at once as diverged, so the workflow completes and the fits leave them out.

Under torchrun every rank runs the job and rank 0 alone writes the outputs, which are those of a
single process.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import torch

from scalinglab import atomic
from scalinglab.errors import UserError
from scalinglab.training import checkpoint, distributed, divergence, downstream, provenance
from scalinglab.training.distributed import World
from scalinglab.training.live import LiveLog
from scalinglab.training.spec import (
    BranchSpec,
    RunSpec,
    computed_spec,
    job_device,
    make_schedule,
    read_spec,
)
from scalinglab.training.trainer import EXIT_PREEMPTED, StopRequest, Trainer

RESUME_FILE = "resume.pt"


def _setup(spec_path, data_dir, threads: int) -> tuple[RunSpec, Path, torch.device, World]:
    spec = read_spec(spec_path)
    device = job_device(spec, threads)
    return spec, Path(data_dir), device, distributed.start(device)


def _write_outputs(trainer: Trainer, out_dir: Path, extra: dict) -> None:
    lines = "".join(json.dumps(row) + "\n" for row in trainer.metrics)
    atomic.write_text(out_dir / "metrics.jsonl", lines)
    record = provenance.record(trainer.spec.to_dict(), trainer.data_meta, trainer.device,
                               started=trainer.started)
    record["processes"] = trainer.world.size  # data parallel: the device above, this many times
    record.update(divergence.record(trainer.divergence))
    record.update(extra)
    atomic.write_json(out_dir / "run.json", record)


def _live_log(trainer: Trainer, out_dir: Path, name: str) -> LiveLog | None:
    """The live outputs of the run (`scalinglab.training.live`), on rank 0 only, as every output."""
    if not trainer.world.is_main:
        return None
    return LiveLog(out_dir, name=name, tracking=trainer.spec.training.get("tracking", ()),
                   config=trainer.spec.to_dict())


def _downstream_task(trainer: Trainer) -> downstream.Task | None:
    """The downstream task of the spec (`training.downstream`), or None when the spec has it
    off (or, made before it existed, has no `downstream` key)."""
    cfg = downstream.DownstreamConfig(**(trainer.spec.downstream or {}))
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


def _leave_together(world: World) -> None:
    """After a run that ended well, every rank waits for rank 0 to finish its outputs (the
    downstream score, run.json) before the process group is destroyed: destroy_process_group is
    collective, and a rank that tore down its group while rank 0 still worked was seen to abort
    (SIGABRT) under load. Not on an error: the other ranks may be inside a collective, and torchrun
    stops them once this one exits."""
    world.barrier()


def train_stable(spec_path, data_dir, out_dir, threads: int = 1) -> None:
    """Warmup + constant LR to the last branch point, saving `branch-<label>.pt` at each."""
    spec, data_dir, device, world = _setup(spec_path, data_dir, threads)
    try:
        trainer = Trainer(spec, data_dir, device, world)
        live = _live_log(trainer, Path(out_dir), spec.series_id)
        try:
            _train_stable(trainer, Path(out_dir), live)
        finally:  # a failed or preempted run keeps its partial rows, for a look
            if live is not None:
                live.close()
        _leave_together(world)
    finally:
        distributed.stop(world)


def _train_stable(trainer: Trainer, out_dir: Path, live: LiveLog | None = None) -> None:
    spec = trainer.spec
    out_dir.mkdir(parents=True, exist_ok=True)
    resume_path = out_dir / RESUME_FILE
    _resume_if_possible(trainer, resume_path)
    by_step: dict[int, list[str]] = {}
    beyond_the_end = []
    for branch in spec.branches:
        if branch.decay_start > spec.stable_steps:
            beyond_the_end.append(branch)
        else:
            by_step.setdefault(branch.decay_start, []).append(branch.label)

    # Branch checkpoints wait in a folder Snakemake does not know about until the run ends:
    # it deletes the declared outputs of a failed job, and a resumed run cannot remake the
    # checkpoints of branch points it has already passed.
    pending = out_dir / "pending"

    def save_branch_points(t: Trainer) -> None:
        for label in by_step.get(t.step, []):
            t.save(pending / f"branch-{label}.pt")

    if spec.stable_steps > 0:
        schedule = make_schedule(spec, spec.stable_steps, decay_start=None)
        trainer.run(schedule, spec.stable_steps, eval_at=set(by_step) - {0},
                    on_step=save_branch_points, resume_path=resume_path, desc=spec.series_id,
                    live=live)
    else:  # cosine baselines: every "branch" trains from the initialisation
        save_branch_points(trainer)
    if not trainer.world.is_main:
        return
    # Training is done: a SIGUSR1/SIGTERM now must not kill the job half-way through its
    # outputs (SIGUSR1's default action), which left resume.pt and no outputs behind.
    stopped = trainer.divergence
    if stopped is not None:
        print(f"warning: {spec.series_id} diverged at step {stopped['step']} "
              f"({stopped['reason']}); stopped early", file=sys.stderr)
    with StopRequest():
        for branch in spec.branches:
            name = f"branch-{branch.label}.pt"
            if branch in beyond_the_end:
                checkpoint.save_placeholder(out_dir / name, "left out of the study table")
            elif stopped is not None and branch.decay_start >= stopped["step"]:
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


def decay_branch(spec_path, label, checkpoint_path, data_dir, out_dir,
                 threads: int = 1, skip_untrained: bool = False) -> None:
    """Load the stable run's checkpoint for `label` and decay to that budget's token count.

    `label`, `checkpoint_path` and `out_dir` may be equal-length lists: the branches are then
    decayed in turn in this one process, each from its own checkpoint with a trainer of its
    own, so each writes what its own job would (`resources.branch_jobs: series`).
    `skip_untrained`: a label that the spec leaves out gets placeholder outputs
    (`write_untrained`) instead of a decay. A job over a series planned while the workflow runs
    (a refinement round) names every label of its phase, and Snakemake wants them all."""
    labels, checkpoints, out_dirs = ([x] if isinstance(x, str | Path) else list(x)
                                     for x in (label, checkpoint_path, out_dir))
    if not len(labels) == len(checkpoints) == len(out_dirs):
        raise UserError(f"{len(labels)} branch labels need as many checkpoints and output "
                        f"folders, got {len(checkpoints)} and {len(out_dirs)}")
    spec, data_dir, device, world = _setup(spec_path, data_dir, threads)
    try:
        branches = [spec.branch(name) for name in labels]
        for name, branch in zip(labels, branches, strict=True):
            if branch is None:
                raise UserError(f"branch label {name!r} is not in {spec_path} "
                                f"(known: {', '.join(b.label for b in spec.branches)})")
        if skip_untrained:
            untrained = [i for i, branch in enumerate(branches) if not branch.trained]
            if world.is_main:
                for i in untrained:
                    write_untrained(branches[i], Path(out_dirs[i]))
            labels, branches, checkpoints, out_dirs = (
                [x for i, x in enumerate(xs) if i not in untrained]
                for xs in (labels, branches, checkpoints, out_dirs))
        late = None
        # a signal between two branches (or while one wrote its outputs) stops the job before
        # the next, as it would stop a branch's training: SLURM's warning is not lost
        with StopRequest() as between:
            for index, (branch, checkpoint_path, out_dir) in enumerate(
                    zip(branches, checkpoints, out_dirs, strict=True)):
                if index and world.any(between.requested is not None or late is not None):
                    if world.is_main:
                        print(f"signal {between.requested or late}: branches "
                              f"{', '.join(labels[index:])} not started; exiting so the job "
                              "is retried", file=sys.stderr)
                    raise SystemExit(EXIT_PREEMPTED)
                # each branch's run.json reports its own peak, as its own job would, where the
                # system lets a process start its peak over (Linux); it says which it is
                own_peak = index == 0 or provenance.reset_peak_memory(device)
                trainer = Trainer(spec, data_dir, device, world)
                live = _live_log(trainer, Path(out_dir), f"{spec.series_id} {branch.label}")
                try:
                    late = _decay_branch(trainer, branch, Path(checkpoint_path), Path(out_dir),
                                         live, peak_memory_of="branch" if own_peak else "job")
                finally:
                    if live is not None:
                        live.close()
                del trainer  # one model at a time: the next branch's is built from scratch
        _leave_together(world)
    finally:
        distributed.stop(world)


def write_untrained(branch: BranchSpec, out_dir: Path) -> None:
    """The outputs of a branch that its plan left out: an empty metrics.jsonl and a run.json
    that says so (`trained: false`). No fit reads them: the fits take the plan's trained runs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out_dir / "metrics.jsonl", "")
    atomic.write_text(out_dir / "run.json", json.dumps({
        "kind": "branch", "label": branch.label, "run_id": branch.run_id, "trained": False,
        "placeholder": "left out of the study table: no job decays it"}, indent=2) + "\n")


def _decay_branch(trainer: Trainer, branch: BranchSpec, checkpoint_path: Path, out_dir: Path,
                  live: LiveLog | None = None, peak_memory_of: str = "branch") -> int | None:
    """Decay one branch and write its outputs; the signal that came while they were written,
    if one did (training itself stops on a signal, saving resume.pt). `peak_memory_of`: whether
    run.json's peak memory is this branch's or that of the job's branches so far."""
    spec, label = trainer.spec, branch.label
    out_dir.mkdir(parents=True, exist_ok=True)
    resume_path = out_dir / RESUME_FILE
    task = _downstream_task(trainer)  # a split too small for it fails now, not after training
    trainer.load(checkpoint_path, keep_metrics=False)
    if trainer.divergence is None:  # else the stable run diverged first: nothing to train
        if trainer.step != branch.decay_start:
            raise UserError(f"{checkpoint_path}: checkpoint is at step {trainer.step}, "
                            f"branch {label} decays from step {branch.decay_start}")
        _resume_if_possible(trainer, resume_path)
        schedule = make_schedule(spec, branch.total_steps, decay_start=branch.decay_start,
                                 shape=branch.decay_shape)
        trainer.run(schedule, branch.total_steps, resume_path=resume_path,
                    desc=f"{spec.series_id} {label}", live=live)
    # as in train_stable: finish the outputs once training is done; a signal meanwhile is
    # returned, so that a job with more branches to go stops before the next one
    with StopRequest() as finishing:
        if trainer.divergence is None:
            final = trainer.metrics[-1] if trainer.metrics else {"val_loss": trainer.evaluate()}
            final_loss = final["val_loss"]
        else:  # a failed point has no loss to fit: null, whatever the last eval measured
            final_loss = None
        if not trainer.world.is_main:
            return finishing.requested
        if trainer.divergence is not None:
            print(f"warning: run {branch.run_id} diverged at step "
                  f"{trainer.divergence['step']} ({trainer.divergence['reason']})",
                  file=sys.stderr)
        _write_outputs(trainer, out_dir, {
            "kind": "branch", "label": label, "run_id": branch.run_id, "C": branch.C,
            "D": branch.D, "steps": trainer.step, "final_val_loss": final_loss,
            "wall_seconds": trainer.elapsed, **_final_accuracy(trainer, task),
            "peak_memory_of": peak_memory_of,
        })
        if live is not None:
            live.finish()
        resume_path.unlink(missing_ok=True)
    return finishing.requested
