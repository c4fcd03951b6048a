"""scripts/gpu-check.sh: its --cpu-smoke mode writes every figure the GPU run will; a part that
overruns is stopped with its jobs; a spent budget skips the parts left."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO
from scalinglab.training import gpu_check

SCRIPT = REPO / "scripts" / "gpu-check.sh"


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_cpu_smoke_writes_every_figure(tmp_path):
    out = tmp_path / "check.json"
    env = dict(os.environ, PYTHON=sys.executable,
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run([str(SCRIPT), "--cpu-smoke", str(out)], capture_output=True,
                            text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    check = json.loads(out.read_text())
    assert check["mode"] == "cpu-smoke"
    parts = {"bench_eager", "study", "bench_compile"}
    assert parts | {"host", "started", "wall_seconds"} <= set(check)

    bench = check["bench_eager"]
    assert bench["device"] == "cpu" and bench["dtype"] == "fp32" and not bench["compile"]
    for key in ("project_tokens_per_s", "bare_tokens_per_s", "model_flops_per_s",
                "peak_memory_gib", "wall_seconds"):
        assert _positive(bench[key]), key
    assert bench["mfu"] is None  # no peak for a CPU; the GPU run fills it from the table
    ratio = bench["ratio"]
    assert ratio["rounds"] >= 10 and _positive(ratio["median"])
    assert ratio["interval"][0] <= ratio["median"] <= ratio["interval"][1]
    assert bench["live"]["trackers"] == ["tensorboard"]
    assert _positive(bench["live"]["ratio"]["median"])
    assert _positive(bench["live"]["seconds_per_eval"])
    assert check["bench_compile"] == {"skipped": "--cpu-smoke: no torch.compile on the CPU"}

    study = check["study"]
    assert (study["n_stable"], study["n_branches"]) == (5, 15)  # 5 sizes x 3 budgets
    assert len(study["devices"]) == 1 and study["devices"][0].startswith("cpu")
    for run in study["runs"]:
        assert _positive(run["final_val_loss"]) and _positive(run["tokens_per_s"]), run
        assert run["steps"] > 0 and run["tensorboard"]
    assert [budget["n_points"] for budget in study["fit"]["budgets"]] == [5, 5, 5]
    assert _positive(study["fit"]["a"]) and _positive(study["fit"]["b"])


def test_an_overrunning_part_is_stopped_with_its_children(tmp_path):
    pid_file = tmp_path / "child.pid"
    start = time.monotonic()
    failed = gpu_check._run(["bash", "-c", f"sleep 60 & echo $! > {pid_file}; wait"],
                            tmp_path / "part.log", limit=1)
    assert failed["error"] == "timed out after 1 s"
    assert time.monotonic() - start < 15
    # the background sleep went with its group: gone, or a zombie waiting for a reaper
    status = Path(f"/proc/{int(pid_file.read_text())}/status")
    assert not status.exists() or "State:\tZ" in status.read_text()


def test_a_spent_budget_skips_the_parts_left(tmp_path, capsys):
    out = tmp_path / "check.json"
    assert gpu_check.main(["--cpu-smoke", str(out), "--budget", "5"]) == 0
    check = json.loads(out.read_text())
    for part in ("bench_eager", "study", "bench_compile"):
        assert check[part] == {"skipped": "the budget was spent"}


def test_the_mini_study_config_is_found_from_the_package():
    # the package moved a folder down once and the script looked for src/workflow/...
    assert gpu_check.STUDY_CONFIG.is_file()
    assert (gpu_check.REPO / "Snakefile").is_file()
