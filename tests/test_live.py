"""Live outputs of a training job: rows in metrics.jsonl.partial from the first evaluation on,
the same rows as the final metrics.jsonl after a crash and resume, progress lines in a log,
TensorBoard scalars."""

from __future__ import annotations

import importlib.util
import io
import json

import pytest
import torch

from helpers import one_thread, read_metrics, tiny_spec, write_spec, write_token_dir  # noqa: F401
from scalinglab.config import StudyConfig, from_dict
from scalinglab.errors import UserError
from scalinglab.training import jobs, live
from scalinglab.training.spec import make_schedule
from scalinglab.training.trainer import Trainer

CPU = torch.device("cpu")


@pytest.fixture()
def tokens(tmp_path):
    return write_token_dir(tmp_path / "tokens")


def _strip(rows):
    """The columns that do not depend on the clock."""
    return [(r["step"], r["tokens"], r["lr"], r["train_loss"], r["val_loss"]) for r in rows]


def _watch(monkeypatch, out_dir, at_steps):
    """Record the partial file's rows (and whether metrics.jsonl exists) as the trainer is about
    to take the step after each of `at_steps`; returns {step: (rows, final_exists)}."""
    seen = {}
    real_step = Trainer.train_step

    def watching(self, factor):
        if self.step in at_steps and self.step not in seen:
            path = out_dir / live.LIVE_FILE
            rows = read_metrics(path) if path.exists() else None
            seen[self.step] = (rows, (out_dir / "metrics.jsonl").exists())
        return real_step(self, factor)

    monkeypatch.setattr(Trainer, "train_step", watching)
    return seen


def test_first_row_is_on_disk_one_eval_interval_after_the_start(tokens, tmp_path, monkeypatch):
    spec = tiny_spec(stable_steps=24)  # eval_every 4
    out = tmp_path / "stable"
    seen = _watch(monkeypatch, out, {0, 4, 8})
    jobs.train_stable(write_spec(tmp_path / "spec.json", spec), tokens, out)

    final = read_metrics(out / "metrics.jsonl")
    assert seen[0] == ([], False)  # the file is there from the start, empty
    rows, final_exists = seen[4]  # the eval at step 4 is on disk before step 5 runs
    assert [r["step"] for r in rows] == [4] and not final_exists
    assert _strip(seen[8][0]) == _strip(final[:2])
    # the finished run: the complete, atomic metrics.jsonl and no partial file
    assert [r["step"] for r in final] == [4, 8, 12, 16, 20, 24]
    assert not (out / live.LIVE_FILE).exists()


def test_a_crashed_run_resumes_to_the_rows_of_an_uninterrupted_one(tokens, tmp_path,
                                                                   monkeypatch):
    spec = tiny_spec(stable_steps=24)  # eval_every 4, checkpoint_every 5
    spec_path = write_spec(tmp_path / "spec.json", spec)
    jobs.train_stable(spec_path, tokens, tmp_path / "straight")
    straight = read_metrics(tmp_path / "straight" / "metrics.jsonl")

    out = tmp_path / "killed"
    real_step = Trainer.train_step

    def crash_at_step_13(self, factor):
        if self.step == 13:
            raise RuntimeError("killed")
        return real_step(self, factor)

    monkeypatch.setattr(Trainer, "train_step", crash_at_step_13)
    with pytest.raises(RuntimeError):
        jobs.train_stable(spec_path, tokens, out)
    # the live rows went past the last checkpoint (step 10); no final output
    assert [r["step"] for r in read_metrics(out / live.LIVE_FILE)] == [4, 8, 12]
    assert not (out / "metrics.jsonl").exists()

    monkeypatch.setattr(Trainer, "train_step", real_step)
    seen = _watch(monkeypatch, out, {10, 13})
    jobs.train_stable(spec_path, tokens, out)
    # on resume the partial file is cut back to the checkpoint's rows, then grows again
    assert _strip(seen[10][0]) == _strip(straight[:2])
    assert _strip(seen[13][0]) == _strip(straight[:3])
    assert _strip(read_metrics(out / "metrics.jsonl")) == _strip(straight)
    assert not (out / live.LIVE_FILE).exists()


def test_progress_lines_go_to_a_log_but_not_to_a_terminal(tmp_path, monkeypatch, capsys):
    row = {"step": 8, "tokens": 2_048_000, "val_loss": 3.14159, "train_loss": 3.5,
           "tokens_per_s": 12_345.0, "lr": 1e-3, "flops": 1.0}
    log = live.LiveLog(tmp_path, name="s1")
    log.start([], step=0, end_step=16)
    log.record(row)  # pytest's captured stderr is not a terminal: a line
    line = capsys.readouterr().err.strip()
    assert line.startswith("s1: step 8/16 (50%) | 2.05M tokens | val 3.1416 train 3.5000 | "
                           "12.3k tokens/s | ETA 0:")

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    log.record(dict(row, step=12))  # the tqdm bar shows progress on a terminal
    assert terminal.getvalue() == ""
    log.finish()
    assert not (tmp_path / live.LIVE_FILE).exists()


def test_the_eta_is_the_time_per_step_so_far_times_the_steps_left(tmp_path, monkeypatch):
    clock = iter([100.0, 130.0])  # start, then 30 s later
    monkeypatch.setattr(live.time, "perf_counter", lambda: next(clock))
    log = live.LiveLog(tmp_path, name="s", progress=False)
    log.start([], step=10, end_step=110)  # resumed at step 10
    line = log.progress_line({"step": 20, "tokens": 1, "val_loss": 1.0, "train_loss": 1.0,
                              "tokens_per_s": 1.0})
    assert line.endswith("ETA 0:04:30")  # 3 s a step, 90 steps left
    log.close()


def _scalars(folder, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return [(event.step, event.value) for event in acc.Scalars(tag)]


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                    reason="tensorboard is not installed")
def test_tensorboard_holds_each_evaluation_once_after_a_resume(tokens, tmp_path, monkeypatch):
    spec = tiny_spec(stable_steps=24)
    spec["training"]["tracking"] = ["tensorboard"]
    spec_path = write_spec(tmp_path / "spec.json", spec)
    out = tmp_path / "stable"
    real_step = Trainer.train_step

    def crash_at_step_13(self, factor):
        if self.step == 13:
            raise RuntimeError("killed")
        return real_step(self, factor)

    monkeypatch.setattr(Trainer, "train_step", crash_at_step_13)
    with pytest.raises(RuntimeError):
        jobs.train_stable(spec_path, tokens, out)
    assert [step for step, _ in _scalars(out / "tensorboard", "val_loss")] == [4, 8, 12]
    monkeypatch.setattr(Trainer, "train_step", real_step)
    jobs.train_stable(spec_path, tokens, out)

    rows = read_metrics(out / "metrics.jsonl")
    for tag in ("val_loss", "train_loss", "lr"):
        points = _scalars(out / "tensorboard", tag)
        assert [step for step, _ in points] == [r["step"] for r in rows]  # each step once
        assert [value for _, value in points] == pytest.approx([r[tag] for r in rows], rel=1e-6)

    # a decay branch's curve starts at the stable run's evaluation at its branch point
    jobs.decay_branch(spec_path, "C1", out / "branch-C1.pt", tokens, tmp_path / "C1")
    branch = read_metrics(tmp_path / "C1" / "metrics.jsonl")
    points = _scalars(tmp_path / "C1" / "tensorboard", "val_loss")
    assert [step for step, _ in points] == [r["step"] for r in branch] == [16, 20]
    assert points[0][1] == pytest.approx(rows[3]["val_loss"], rel=1e-6)


def test_tracking_keeps_the_checkpoint_valid(tokens, tmp_path):
    """Tracking changes what is recorded, not what is computed: a checkpoint made without it is
    resumed with it on (and a spec without the key, from before it existed, matches too)."""
    spec = tiny_spec()
    trainer = Trainer(spec, tokens, CPU)
    trainer.run(make_schedule(spec, 20, decay_start=None), 5)
    trainer.save(tmp_path / "a.pt")
    tracked = dict(spec, training=dict(spec["training"], tracking=["tensorboard"]))
    resumed = Trainer(tracked, tokens, CPU)
    resumed.load(tmp_path / "a.pt")
    assert resumed.step == 5
    for a, b in zip(trainer.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_wandb_listed_but_not_installed_is_a_user_error(tokens, tmp_path):
    spec = tiny_spec()
    spec["training"]["tracking"] = ["wandb"]
    with pytest.raises(UserError, match="'wandb' but the wandb package is not installed"):
        jobs.train_stable(write_spec(tmp_path / "spec.json", spec), tokens, tmp_path / "out")
    assert not (tmp_path / "out" / "resume.pt").exists()  # refused before any training


def test_an_unknown_tracker_names_its_key():
    with pytest.raises(UserError, match=r"training\.tracking\[1\]"):
        from_dict(StudyConfig, {"training": {"tracking": ["tensorboard", "mlflow"]}})
    cfg = from_dict(StudyConfig, {"training": {"tracking": ["tensorboard"]}})
    assert cfg.training.tracking == ("tensorboard",)
    assert json.loads(json.dumps(from_dict(StudyConfig, {}).training.tracking)) == []
