"""Training: resume equals uninterrupted, a decay branch equals an uninterrupted WSD run,
signals save a checkpoint, outputs are complete files."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import datetime

import pytest
import torch

from helpers import read_metrics, tiny_spec, write_spec, write_token_dir
from scalinglab.errors import UserError
from scalinglab.training import jobs, provenance
from scalinglab.training.schedule import Schedule
from scalinglab.training.spec import RunSpec, make_schedule, read_spec
from scalinglab.training.trainer import EXIT_PREEMPTED, Trainer

CPU = torch.device("cpu")


@pytest.fixture()
def tokens(tmp_path):
    return write_token_dir(tmp_path / "tokens")


def _losses(trainer):
    return [(row["step"], row["val_loss"], row["train_loss"]) for row in trainer.metrics]


def test_resume_equals_uninterrupted(tokens, tmp_path):
    spec = tiny_spec()
    schedule = make_schedule(spec, 20, decay_start=None)
    straight = Trainer(spec, tokens, CPU)
    straight.run(schedule, 20)

    first = Trainer(spec, tokens, CPU)
    first.run(schedule, 10)
    first.save(tmp_path / "half.pt")
    second = Trainer(spec, tokens, CPU)
    second.load(tmp_path / "half.pt")
    assert second.step == 10
    second.run(schedule, 20)

    # the interrupted run also evaluated at step 10; every other eval must match exactly
    resumed = {step: val for step, val, _ in _losses(first) + _losses(second)}
    assert all(resumed[step] == val for step, val, _ in _losses(straight))
    assert second.metrics[-1] == pytest.approx(straight.metrics[-1], rel=1e-9) or \
        second.metrics[-1]["val_loss"] == straight.metrics[-1]["val_loss"]
    for a, b in zip(straight.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_decay_branch_equals_uninterrupted_wsd_run(tokens, tmp_path):
    spec = tiny_spec(stable_steps=24, branches=((16, 20, "C1"), (24, 30, "C2")))
    spec_path = write_spec(tmp_path / "spec.json", spec)
    jobs.train_stable(spec_path, tokens, tmp_path / "stable")
    for label in ("C1", "C2"):
        jobs.decay_branch(spec_path, label, tmp_path / "stable" / f"branch-{label}.pt", tokens,
                          tmp_path / label)

    # the same 30-step WSD run, trained in one go
    straight = Trainer(spec, tokens, CPU)
    schedule = Schedule(kind="wsd", warmup_steps=4, total_steps=30, decay_start=24)
    lrs = []
    straight.run(schedule, 30, on_step=lambda t: lrs.append(t.optimizer.param_groups[0]["lr"]))
    branch = read_metrics(tmp_path / "C2" / "metrics.jsonl")
    expected = {row["step"]: row for row in straight.metrics}
    assert [row["step"] for row in branch] == [24, 28, 30]  # from the branch point on
    for row in branch:
        assert row["val_loss"] == expected[row["step"]]["val_loss"]
        assert row["lr"] == pytest.approx(expected[row["step"]]["lr"], abs=0)
    record = json.loads((tmp_path / "C2" / "run.json").read_text())
    assert record["final_val_loss"] == straight.metrics[-1]["val_loss"]
    assert record["steps"] == 30
    # the schedule reached zero at the end of the decay, as an uninterrupted run does
    assert lrs[-1] == pytest.approx(0.0)
    assert not (tmp_path / "C2" / "resume.pt").exists()


def test_one_job_decaying_several_branches_writes_what_their_own_jobs_write(
        tokens, tmp_path, monkeypatch):
    # resources.branch_jobs: series, against a job per branch: the same curves, to the bit
    spec = tiny_spec(stable_steps=24, branches=((16, 20, "C1"), (24, 30, "C2")))
    spec_path = write_spec(tmp_path / "spec.json", spec)
    jobs.train_stable(spec_path, tokens, tmp_path / "stable")
    checkpoints = [tmp_path / "stable" / f"branch-{label}.pt" for label in ("C1", "C2")]
    for label, checkpoint in zip(("C1", "C2"), checkpoints, strict=True):
        jobs.decay_branch(spec_path, label, checkpoint, tokens, tmp_path / "one" / label)
    resets = []  # the peak memory starts over before the second branch, not before the first
    monkeypatch.setattr(provenance, "reset_peak_memory",
                        lambda device: resets.append(device) or False)  # as on macOS
    jobs.decay_branch(spec_path, ["C1", "C2"], checkpoints, tokens,
                      [tmp_path / "together" / label for label in ("C1", "C2")])
    assert len(resets) == 1
    # a system that cannot start it over: the second branch's run.json says whose peak it is
    assert [json.loads((tmp_path / "together" / label / "run.json").read_text())[
        "peak_memory_of"] for label in ("C1", "C2")] == ["branch", "job"]
    assert json.loads((tmp_path / "one" / "C2" / "run.json").read_text())[
        "peak_memory_of"] == "branch"
    for label in ("C1", "C2"):
        alone = read_metrics(tmp_path / "one" / label / "metrics.jsonl")
        together = read_metrics(tmp_path / "together" / label / "metrics.jsonl")
        assert [(r["step"], r["val_loss"], r["train_loss"]) for r in together] == \
            [(r["step"], r["val_loss"], r["train_loss"]) for r in alone]
        record = json.loads((tmp_path / "together" / label / "run.json").read_text())
        assert record["label"] == label and record["final_val_loss"] == alone[-1]["val_loss"]
    with pytest.raises(UserError, match="2 branch labels need as many checkpoints"):
        jobs.decay_branch(spec_path, ["C1", "C2"], checkpoints[:1], tokens, [tmp_path / "x"])
    with pytest.raises(UserError, match="'C9' is not in"):
        jobs.decay_branch(spec_path, ["C1", "C9"], checkpoints, tokens,
                          [tmp_path / "y1", tmp_path / "y2"])
    assert not (tmp_path / "y1").exists()  # a bad label stops the job before any branch trains


def test_a_job_over_a_planned_series_writes_placeholders_for_the_branches_it_leaves_out(
        tokens, tmp_path):
    # a refinement round's rule names every label; the plan trains C2 only
    spec = tiny_spec(stable_steps=24, branches=((16, 20, "C1"), (24, 30, "C2")))
    spec["branches"][0]["trained"] = False
    spec_path = write_spec(tmp_path / "spec.json", spec)
    jobs.train_stable(spec_path, tokens, tmp_path / "stable")
    checkpoints = [tmp_path / "stable" / f"branch-{label}.pt" for label in ("C1", "C2")]
    jobs.decay_branch(spec_path, "C2", checkpoints[1], tokens, tmp_path / "alone")
    jobs.decay_branch(spec_path, ["C1", "C2"], checkpoints, tokens,
                      [tmp_path / label for label in ("C1", "C2")], skip_untrained=True)
    curves = [[(r["step"], r["val_loss"], r["train_loss"]) for r in read_metrics(path)]
              for path in (tmp_path / "C2" / "metrics.jsonl", tmp_path / "alone" / "metrics.jsonl")]
    assert curves[0] == curves[1] and len(curves[0]) == 3
    left_out = json.loads((tmp_path / "C1" / "run.json").read_text())
    assert left_out["trained"] is False and left_out["run_id"].endswith("C1")
    assert "final_val_loss" not in left_out  # nothing a fit could take for a loss
    assert (tmp_path / "C1" / "metrics.jsonl").read_text() == ""

def test_a_signal_while_a_branch_writes_its_outputs_stops_the_job_before_the_next(
        tokens, tmp_path, monkeypatch):
    spec = tiny_spec(stable_steps=24, branches=((16, 20, "C1"), (24, 30, "C2")))
    spec_path = write_spec(tmp_path / "spec.json", spec)
    jobs.train_stable(spec_path, tokens, tmp_path / "stable")
    decay = jobs._decay_branch

    def signalled(*args, **kwargs):  # SLURM's warning arrives as C1 finishes its outputs
        decay(*args, **kwargs)
        return signal.SIGUSR1

    monkeypatch.setattr(jobs, "_decay_branch", signalled)
    with pytest.raises(SystemExit) as stopped:
        jobs.decay_branch(spec_path, ["C1", "C2"],
                          [tmp_path / "stable" / f"branch-{label}.pt" for label in ("C1", "C2")],
                          tokens, [tmp_path / label for label in ("C1", "C2")])
    assert stopped.value.code == EXIT_PREEMPTED
    assert (tmp_path / "C1" / "run.json").exists() and not (tmp_path / "C2").exists()

def test_run_json_records_when_the_job_ran_and_its_peak_memory(tokens, tmp_path):
    spec_path = write_spec(tmp_path / "spec.json", tiny_spec(stable_steps=24))
    before = time.time()
    jobs.train_stable(spec_path, tokens, tmp_path / "stable")
    after = time.time()
    record = json.loads((tmp_path / "stable" / "run.json").read_text())
    started = datetime.fromisoformat(record["started"]).timestamp()
    finished = datetime.fromisoformat(record["finished"]).timestamp()
    # milliseconds in the timestamps; the job's start is before its training, not at its end
    assert before - 1e-3 <= started < finished <= after + 1e-3
    assert record["job_seconds"] == pytest.approx(finished - started, abs=2e-3)
    assert record["job_seconds"] >= record["wall_seconds"] > 0  # the training loop is inside
    assert record["peak_rss_bytes"] > 50 * 2**20  # torch alone is more
    assert record["peak_cuda_bytes"] is None  # a CPU run


def test_branch_checkpoints_are_saved_at_their_decay_start(tokens, tmp_path):
    spec = tiny_spec(stable_steps=24, branches=((0, 10, "C0"), (16, 20, "C1"), (24, 30, "C2")))
    spec_path = write_spec(tmp_path / "spec.json", spec)
    jobs.train_stable(spec_path, tokens, tmp_path / "stable")
    for label, step in (("C0", 0), ("C1", 16), ("C2", 24)):
        state = torch.load(tmp_path / "stable" / f"branch-{label}.pt", weights_only=True)
        assert state["step"] == step
    metrics = read_metrics(tmp_path / "stable" / "metrics.jsonl")
    assert {16, 24} <= {row["step"] for row in metrics}  # evaluated at every branch point
    assert not (tmp_path / "stable" / "pending").exists()


def test_branch_beyond_the_stable_run_gets_a_placeholder(tokens, tmp_path):
    spec = tiny_spec(stable_steps=16, branches=((16, 20, "C1"), (24, 30, "C2")))
    spec["branches"][1]["trained"] = False
    spec_path = write_spec(tmp_path / "spec.json", spec)
    jobs.train_stable(spec_path, tokens, tmp_path / "stable")
    assert torch.load(tmp_path / "stable" / "branch-C1.pt", weights_only=True)["step"] == 16
    with pytest.raises(UserError, match="not trained"):
        jobs.decay_branch(spec_path, "C2", tmp_path / "stable" / "branch-C2.pt", tokens,
                          tmp_path / "C2")


def test_killed_stable_run_resumes_to_the_same_losses(tokens, tmp_path, monkeypatch):
    spec = tiny_spec(stable_steps=24)
    spec_path = write_spec(tmp_path / "spec.json", spec)
    jobs.train_stable(spec_path, tokens, tmp_path / "straight")

    real_step = Trainer.train_step

    def crash_at_step_13(self, factor):
        if self.step == 13:
            raise RuntimeError("killed")
        return real_step(self, factor)

    monkeypatch.setattr(Trainer, "train_step", crash_at_step_13)
    with pytest.raises(RuntimeError):
        jobs.train_stable(spec_path, tokens, tmp_path / "killed")
    assert torch.load(tmp_path / "killed" / "resume.pt", weights_only=True)["step"] == 10
    assert not (tmp_path / "killed" / "metrics.jsonl").exists()  # no half-written output
    monkeypatch.setattr(Trainer, "train_step", real_step)
    jobs.train_stable(spec_path, tokens, tmp_path / "killed")

    def strip(rows):
        return [(r["step"], r["val_loss"], r["train_loss"], r["lr"]) for r in rows]

    assert strip(read_metrics(tmp_path / "killed" / "metrics.jsonl")) == strip(
        read_metrics(tmp_path / "straight" / "metrics.jsonl"))
    for label in ("C1", "C2"):
        a = torch.load(tmp_path / "killed" / f"branch-{label}.pt", weights_only=True)
        b = torch.load(tmp_path / "straight" / f"branch-{label}.pt", weights_only=True)
        for key in a["model"]:
            assert torch.equal(a["model"][key], b["model"][key])


def test_sigusr1_saves_a_checkpoint_and_exits_for_a_retry(tokens, tmp_path, monkeypatch):
    spec = tiny_spec(stable_steps=24)
    spec_path = write_spec(tmp_path / "spec.json", spec)
    real_step = Trainer.train_step

    def signal_at_step_7(self, factor):
        if self.step == 7:
            os.kill(os.getpid(), signal.SIGUSR1)
        return real_step(self, factor)

    monkeypatch.setattr(Trainer, "train_step", signal_at_step_7)
    with pytest.raises(SystemExit) as exit_info:
        jobs.train_stable(spec_path, tokens, tmp_path / "run")
    assert exit_info.value.code == EXIT_PREEMPTED
    assert torch.load(tmp_path / "run" / "resume.pt", weights_only=True)["step"] == 8


def test_checkpoint_from_another_spec_is_refused(tokens, tmp_path):
    spec = tiny_spec()
    trainer = Trainer(spec, tokens, CPU)
    trainer.save(tmp_path / "a.pt")
    other = dict(spec, training=dict(spec["training"], lr=5e-3))
    with pytest.raises(UserError, match="different spec"):
        Trainer(other, tokens, CPU).load(tmp_path / "a.pt")


def test_unknown_branch_label_is_a_user_error(tokens, tmp_path):
    spec_path = write_spec(tmp_path / "spec.json", tiny_spec())
    with pytest.raises(UserError, match="C9"):
        jobs.decay_branch(spec_path, "C9", tmp_path / "x.pt", tokens, tmp_path / "out")


def test_cosine_branch_trains_from_scratch(tokens, tmp_path):
    spec = tiny_spec(stable_steps=0, branches=((0, 12, "C1"),), kind="cosine")
    spec["schedule"]["final_lr_ratio"] = 0.1
    spec_path = write_spec(tmp_path / "spec.json", spec)
    jobs.train_stable(spec_path, tokens, tmp_path / "stable")
    jobs.decay_branch(spec_path, "C1", tmp_path / "stable" / "branch-C1.pt", tokens,
                      tmp_path / "C1")
    rows = read_metrics(tmp_path / "C1" / "metrics.jsonl")
    assert rows[-1]["step"] == 12
    # the cosine reaches final_lr_ratio of the peak on its last update
    assert rows[-1]["lr"] == pytest.approx(1e-2 * 0.1, rel=1e-6)


def test_run_spec_round_trips_and_names_a_bad_key(tmp_path):
    spec = tiny_spec()
    spec["branches"][1]["decay_shape"] = "1-sqrt"
    typed = read_spec(write_spec(tmp_path / "spec.json", spec))
    assert typed.branches[1].decay_shape == "1-sqrt" and typed.branches[0].decay_shape is None
    assert json.dumps(typed.to_dict(), sort_keys=True) == json.dumps(spec, sort_keys=True)
    out = typed.to_dict()
    assert "downstream" not in out and "decay_shape" not in out["branches"][0]
    for key in ("stable_steps", "N"):
        with pytest.raises(UserError, match=f"missing key '{key}'"):
            RunSpec.from_dict({k: v for k, v in spec.items() if k != key})
    with pytest.raises(UserError, match="unknown key 'extra'"):
        RunSpec.from_dict({**spec, "extra": 1})
    with pytest.raises(UserError, match=r"branches\[0\]: key 'decay_start' should be int"):
        RunSpec.from_dict({**spec, "branches": [{**spec["branches"][0], "decay_start": "16"}]})


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="Linux only")
def test_the_peak_memory_starts_over_from_what_is_resident():
    before = provenance.peak_memory(torch.device("cpu"))["peak_rss_bytes"]
    block = torch.ones(48 * 2**20)  # 192 MiB, given back to the system when freed
    block += 1
    del block
    high = provenance.peak_memory(torch.device("cpu"))["peak_rss_bytes"]
    assert high > before + 150 * 2**20 or high > 190 * 2**20
    assert provenance.reset_peak_memory(torch.device("cpu"))
    low = provenance.peak_memory(torch.device("cpu"))["peak_rss_bytes"]
    assert low < high - 150 * 2**20
