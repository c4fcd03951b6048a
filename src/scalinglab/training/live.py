"""What a training job shows while it runs (docs/monitoring.md).

Three outputs, all written by the main process at every evaluation, none of them a Snakemake
output:

- `metrics.jsonl.partial` in the run's folder: the metric rows so far, one JSON object a line,
  each appended and flushed as it is measured. At the end the trainer writes `metrics.jsonl`
  atomically with the same rows, then `run.json` (the mark of a finished run), then deletes the
  partial file. So `metrics.jsonl` exists only complete, as every other output (Snakemake takes a
  present output as done; an interrupted job leaves only the partial file behind).
- a progress line in the job's log (step, tokens, losses, tokens/s, ETA) when stderr is not a
  terminal, as under Snakemake (`> {log} 2>&1`), where the tqdm bar turns itself off.
- the trackers named in `training.tracking`: TensorBoard event files in `<run>/tensorboard/`
  (`tensorboard --logdir results/runs` shows every run), or a W&B run in offline mode in
  `<run>/wandb/` (never a network call; `wandb sync` uploads it later, if you want).

Resume: the live outputs are rebuilt from the checkpoint's rows when a run starts (`start`), so
a run killed after its last checkpoint and resumed shows each evaluation once, exactly the rows
of an uninterrupted run: the partial file is truncated to them, the tracker folders are cleared
and the rows logged again.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path

from scalinglab.errors import UserError

LIVE_FILE = "metrics.jsonl.partial"
TRACKERS = ("tensorboard", "wandb")
# the metric columns a tracker plots, against the step
SCALARS = ("val_loss", "train_loss", "lr", "tokens_per_s", "tokens", "flops")


class LiveLog:
    """The live outputs of one run in `out_dir`; `name` labels its progress lines and its W&B
    run, `config` is what the W&B run records as its config (the spec)."""

    def __init__(self, out_dir: str | Path, *, name: str, tracking=(), config: dict | None = None,
                 progress: bool | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LIVE_FILE
        self.name = name
        self.tracking = tuple(dict.fromkeys(tracking))  # in order, each once
        unknown = [kind for kind in self.tracking if kind not in TRACKERS]
        if unknown:
            raise UserError(f"training.tracking: {unknown[0]!r} is not one of "
                            f"{', '.join(TRACKERS)}")
        for kind in self.tracking:  # fail at the job's start, not at its first evaluation
            _check_installed(kind)
        self.config = config or {}
        self.progress = progress  # None: when stderr is not a terminal
        self._file = None
        self._trackers: list = []
        self._start = (0.0, 0)
        self._end_step = 0

    def start(self, rows: list[dict], step: int, end_step: int) -> None:
        """(Re)start at `step` with the rows so far (a checkpoint's, or a branch's first row):
        the partial file and the trackers hold exactly these rows afterwards."""
        self.close()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._trackers = [_open_tracker(kind, self.out_dir, self.name, self.config)
                          for kind in self.tracking]
        self._file = open(self.path, "w")  # open for the run; close() closes it
        for row in rows:
            self._write(row)
        self._file.flush()
        self._start, self._end_step = (time.perf_counter(), step), end_step

    def record(self, row: dict) -> None:
        """One new evaluation: append it, flush it, log a progress line."""
        self._write(row)
        self._file.flush()
        progress = self.progress
        if progress is None:  # a terminal has the tqdm bar
            progress = not _is_terminal(sys.stderr)
        if progress:
            print(self.progress_line(row), file=sys.stderr, flush=True)

    def _write(self, row: dict) -> None:
        self._file.write(json.dumps(row) + "\n")
        for tracker in self._trackers:
            tracker.log(row)

    def progress_line(self, row: dict) -> str:
        started, first_step = self._start
        done = row["step"] - first_step
        left = self._end_step - row["step"]
        eta = (time.perf_counter() - started) / done * left if done > 0 else None
        share = row["step"] / self._end_step if self._end_step else 1.0
        return (f"{self.name}: step {row['step']}/{self._end_step} ({share:.0%}) | "
                f"{_si(row['tokens'])} tokens | val {row['val_loss']:.4f} "
                f"train {row['train_loss']:.4f} | {_si(row['tokens_per_s'])} tokens/s | "
                f"ETA {_duration(eta)}" + (" | diverged" if row.get("diverged") else ""))

    def close(self) -> None:
        """Close the file and the trackers (they keep what they wrote)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        for tracker in self._trackers:
            tracker.close()
        self._trackers = []

    def finish(self) -> None:
        """The run's `metrics.jsonl` and `run.json` are written: the partial file goes."""
        self.close()
        self.path.unlink(missing_ok=True)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream: write no bar-like output
        return False


def _si(value: float) -> str:
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


# the package each tracker needs, and what to tell a user who lacks it
_PACKAGES = {
    "tensorboard": ("tensorboard", "pip install tensorboard"),
    "wandb": ("wandb", "pip install wandb, or leave it out"),
}


def _check_installed(kind: str) -> None:
    package, advice = _PACKAGES[kind]
    if importlib.util.find_spec(package) is None:
        raise UserError(f"training.tracking lists {kind!r} but the {package} package is not "
                        f"installed ({advice})")


def _open_tracker(kind: str, out_dir: Path, name: str, config: dict):
    if kind == "tensorboard":
        return _TensorBoard(out_dir / "tensorboard")
    return _Wandb(out_dir, name, config)


class _TensorBoard:
    """Scalars against the step in `folder` (cleared first: `LiveLog.start` logs the rows so far
    again, so a resumed run has no duplicate or stale points)."""

    def __init__(self, folder: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("training.tracking lists 'tensorboard' but the tensorboard package "
                            "is not installed (pip install tensorboard)") from None
        shutil.rmtree(folder, ignore_errors=True)
        self.writer = SummaryWriter(str(folder))

    def log(self, row: dict) -> None:
        for key in SCALARS:
            if row.get(key) is not None:
                self.writer.add_scalar(key, row[key], global_step=row["step"])
        self.writer.flush()  # live: TensorBoard sees the point now, not at the next 2-min flush

    def close(self) -> None:
        self.writer.close()


class _Wandb:
    """A W&B run in offline mode under `<run>/wandb/` (cleared first, as for TensorBoard)."""

    def __init__(self, out_dir: Path, name: str, config: dict) -> None:
        try:
            import wandb
        except ImportError:
            raise UserError("training.tracking lists 'wandb' but the wandb package is not "
                            "installed (pip install wandb, or leave it out)") from None
        os.environ["WANDB_MODE"] = "offline"  # never a network call, whatever the user's env
        shutil.rmtree(out_dir / "wandb", ignore_errors=True)
        self.run = wandb.init(project="scalinglab", name=name, dir=str(out_dir),
                              mode="offline", config=config)

    def log(self, row: dict) -> None:
        self.run.log({key: row[key] for key in SCALARS if row.get(key) is not None},
                     step=row["step"])

    def close(self) -> None:
        self.run.finish()
