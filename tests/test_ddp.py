"""Data parallel training (torchrun + DDP, gloo on the CPU): 2 processes reach the losses and
weights of one process with the same global batch, and write the same checkpoints."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import scalinglab
from helpers import REPO, read_metrics, tiny_spec, write_spec, write_token_dir
from scalinglab.cli import main as cli
from scalinglab.config import StudyConfig, from_dict
from scalinglab.errors import UserError
from scalinglab.training import checkpoint, distributed, jobs
from scalinglab.training.trainer import EXIT_PREEMPTED

# float sums in another order (two half-batch means, then DDP's all-reduce) move the losses by
# about 1e-7 relative; Adam carries that over 24 steps to well under 1e-4
LOSS_RTOL = 1e-4
WEIGHT_ATOL = 1e-4


def _env() -> dict:
    # the workers import this checkout's scalinglab, and find `python` where the tests run
    src = str(Path(scalinglab.__file__).resolve().parents[1])
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                PYTHONPATH=os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])))


def test_launcher_is_plain_python_for_one_process_and_torchrun_for_more():
    assert distributed.launcher(1) == "python -m scalinglab"
    command = distributed.launcher(4)
    assert command.startswith("python -m torch.distributed.run --standalone --nproc-per-node 4 ")
    assert command.endswith(" -m scalinglab")
    # torchrun passes SLURM's time-limit warning on to the workers instead of dying of it
    assert "--signals-to-handle SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1" in command


def test_training_jobs_ask_for_and_launch_gpus_per_run_processes(tmp_path):
    """`snakemake -n -p`: every IsoFLOP training job starts torchrun with K processes, asks for K
    GPUs and K cores; the other phases' jobs stay single-process."""
    extra = tmp_path / "k2.yaml"
    extra.write_text("resources: {gpus_per_run: 2}\ntraining: {device: cuda}\n")
    cmd = [str(Path(sys.executable).parent / "snakemake"), "-s", str(REPO / "Snakefile"),
           "--directory", str(tmp_path), "-n", "-p", "--cores", "4",
           "--configfile", str(REPO / "tests/smoke.yaml"), str(extra)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    jobs = [job for job in done.stdout.split("\nrule ")
            if job.startswith(("train_stable_isoflop:", "decay_branch_isoflop:"))]
    assert len(jobs) >= 2
    for job in jobs:
        assert "python -m scalinglab " in job and "--processes 2 " in job
        assert "gpu=2" in job and "threads: 2" in job and "processes=2" in job


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    tokens = write_token_dir(tmp_path / "tokens")
    spec = tiny_spec(stable_steps=24)
    assert spec["training"]["batch_size"] % 2 == 0
    spec_path = write_spec(tmp_path / "spec.json", spec)
    jobs.train_stable(spec_path, tokens, tmp_path / "one")

    args = ["train", "stable", "--spec", spec_path, "--data-dir", tokens,
            "--out-dir", tmp_path / "two", "--threads", "2", "--processes", "2"]
    # what the workflow's rule runs: the verb re-runs itself as two torchrun workers
    command = f"python -m scalinglab {shlex.join(str(a) for a in args)}"
    done = subprocess.run(command, shell=True, env=_env(), capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]

    one = read_metrics(tmp_path / "one" / "metrics.jsonl")
    two = read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert [r["step"] for r in two] == [r["step"] for r in one] == [4, 8, 12, 16, 20, 24]
    for a, b in zip(one, two, strict=True):
        assert b["tokens"] == a["tokens"]  # tokens of the global batch, not of one rank
        assert b["lr"] == a["lr"]
        for key in ("train_loss", "val_loss"):
            assert b[key] == pytest.approx(a[key], rel=LOSS_RTOL), (a["step"], key)
    worst = max(abs(b[k] - a[k]) / a[k] for a, b in zip(one, two, strict=True)
                for k in ("train_loss", "val_loss"))
    print(f"largest relative loss difference, 2 processes vs 1: {worst:.2e}")

    record = json.loads((tmp_path / "two" / "run.json").read_text())
    assert record["processes"] == 2 and record["steps"] == 24
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir())  # no resume.pt, no pending/ left
    for label in ("C1", "C2"):
        # the files of a single process: the same keys, loadable under the same spec
        a = checkpoint.load(tmp_path / "one" / f"branch-{label}.pt", spec)
        b = checkpoint.load(tmp_path / "two" / f"branch-{label}.pt", spec)
        assert a["step"] == b["step"]
        assert a["model"].keys() == b["model"].keys()
        for key in a["model"]:
            torch.testing.assert_close(b["model"][key], a["model"][key], rtol=0,
                                       atol=WEIGHT_ATOL)
        largest = max(float((b["model"][k] - a["model"][k]).abs().max()) for k in a["model"])
        print(f"branch-{label}.pt: largest weight difference {largest:.2e}")


def test_two_processes_decay_a_series_in_one_job_as_one_process_does(tmp_path):
    """resources.branch_jobs: series under torchrun: each rank decays the branches in turn, and
    rank 0 writes each branch's outputs, those of one process decaying them one by one."""
    tokens = write_token_dir(tmp_path / "tokens")
    spec_path = write_spec(tmp_path / "spec.json", tiny_spec(stable_steps=24))
    jobs.train_stable(spec_path, tokens, tmp_path / "stable")
    labels = ("C1", "C2")
    checkpoints = [tmp_path / "stable" / f"branch-{label}.pt" for label in labels]
    for label, path in zip(labels, checkpoints, strict=True):
        jobs.decay_branch(spec_path, label, path, tokens, tmp_path / "one" / label)

    args = ["train", "branch", "--spec", spec_path, "--label", *labels,
            "--checkpoint", *checkpoints, "--data-dir", tokens,
            "--out-dir", *(tmp_path / "two" / label for label in labels),
            "--threads", "2", "--processes", "2"]
    command = f"python -m scalinglab {shlex.join(str(a) for a in args)}"
    done = subprocess.run(command, shell=True, env=_env(), capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    for label in labels:
        one = read_metrics(tmp_path / "one" / label / "metrics.jsonl")
        two = read_metrics(tmp_path / "two" / label / "metrics.jsonl")
        assert len(one) >= 2 and [r["step"] for r in two] == [r["step"] for r in one]
        for a, b in zip(one, two, strict=True):
            assert b["lr"] == a["lr"]
            assert b["val_loss"] == pytest.approx(a["val_loss"], rel=LOSS_RTOL), label
        record = json.loads((tmp_path / "two" / label / "run.json").read_text())
        assert record["label"] == label and record["processes"] == 2
        assert record["final_val_loss"] == pytest.approx(two[-1]["val_loss"], rel=0)
        assert not (tmp_path / "two" / label / "resume.pt").exists()


def test_a_stop_signal_on_another_rank_stops_this_one_too(tmp_path, monkeypatch):
    """The loop stops on the flag the ranks agree on, not on its own signal only: here the
    'other rank' (World.any) reports a signal after step 7, and this process saves and exits."""
    tokens = write_token_dir(tmp_path / "tokens")
    spec_path = write_spec(tmp_path / "spec.json", tiny_spec(stable_steps=24))
    calls = []

    def any_rank(self, flag):
        calls.append(flag)
        return flag or len(calls) == 7

    monkeypatch.setattr(distributed.World, "any", any_rank)
    with pytest.raises(SystemExit) as exit_info:
        jobs.train_stable(spec_path, tokens, tmp_path / "run")
    assert exit_info.value.code == EXIT_PREEMPTED
    assert not any(calls)  # no signal reached this process
    assert torch.load(tmp_path / "run" / "resume.pt", weights_only=True)["step"] == 7


def test_batch_not_divisible_by_the_processes_is_a_user_error(tmp_path, monkeypatch, capsys):
    with pytest.raises(UserError, match="resources.gpus_per_run: training.batch_size=6 is not "
                       "divisible by 4"):
        from_dict(StudyConfig, {"training": {"batch_size": 6}, "resources": {"gpus_per_run": 4}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: {batch_size: 6}\nresources: {gpus_per_run: 4}\n")
    assert cli.main(["check-config", str(REPO / "tests/smoke.yaml"), str(bad)]) == 2
    assert "resources.gpus_per_run: training.batch_size=6" in capsys.readouterr().err

    # a job started by torchrun with a batch its processes cannot share stops before training
    tokens = write_token_dir(tmp_path / "tokens")
    spec_path = write_spec(tmp_path / "spec.json", tiny_spec())  # batch_size 4
    monkeypatch.setenv("WORLD_SIZE", "3")
    code = cli.main(["train", "stable", "--spec", str(spec_path), "--data-dir", str(tokens),
                     "--out-dir", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "resources.gpus_per_run" in err and "batch_size=4" in err
    assert not (tmp_path / "out").exists()

    # the workflow's command checks it before it starts torchrun
    monkeypatch.delenv("WORLD_SIZE")
    code = cli.main(["train", "stable", "--spec", str(spec_path), "--data-dir", str(tokens),
                     "--out-dir", str(tmp_path / "out"), "--processes", "3"])
    assert code == 2
    assert "batch_size=4 is not divisible by 3" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
