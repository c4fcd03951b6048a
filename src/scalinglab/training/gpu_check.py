"""The GPU check (`scripts/gpu-check.sh`, docs/gpu.md): what to measure in the first few minutes
a GPU is at hand, written to one JSON file.

Parts, in order of importance, each a subprocess with a time limit inside one overall budget
(default 450 s, for an 8-minute call):

1. `bench_eager`: `bench train` at the GPT-2 small shape (12 layers, 768 wide, 12 heads, context
   1024, vocabulary 50,304), bf16 autocast: tokens/s of the project's step and of a bare loop,
   their median ratio with its interval, MFU against the peak table of `training.bench`, peak
   memory, and live writing on against off;
2. `study`: the mini study of `workflow/configs/gpu-check.yaml` (5 sizes x 3 budgets, the IsoFLOP
   spine to `results/fits/isoflop.json`) through `snakemake` in a temporary folder, on CUDA;
3. `bench_compile`: part 1 again under torch.compile (the compile time is the risk: last).

A part that fails or runs out of time is recorded with its error and the end of its log, and the
others still run; the JSON is rewritten after every part, so a call cut short keeps what it
measured. `--cpu-smoke` runs the same parts on the CPU in seconds (a tiny model, fp32 as CPU
training runs, no compile) to test the script without a GPU.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scalinglab import atomic

# src/scalinglab/training/gpu_check.py: the checkout is three folders above the package
REPO = Path(__file__).resolve().parents[3]
STUDY_CONFIG = REPO / "workflow" / "configs" / "gpu-check.yaml"
STUDY_TARGET = "results/fits/isoflop.json"

# bench train's arguments per mode: GPT-2 small's shape on a GPU (Radford et al. 2019, 124M
# parameters with tied embeddings; its vocabulary of 50,257 padded to a multiple of 64, as
# nanoGPT does), a tiny model for the CPU smoke test
BENCH = {
    "gpu": {"n-layer": 12, "n-embd": 768, "n-head": 12, "block-size": 1024,
            "vocab-size": 50304, "batch-size": 16, "steps": 10, "rounds": 10,
            "live-rounds": 10, "live-steps": 4, "live-eval-every": 2},
    "cpu-smoke": {"n-layer": 1, "n-embd": 32, "n-head": 2, "block-size": 32,
                  "vocab-size": 256, "batch-size": 4, "steps": 2, "rounds": 10,
                  "live-rounds": 10, "live-steps": 4, "live-eval-every": 2, "threads": 1},
}
# under torch.compile the live comparison is left out: its evaluations would compile the model
# a second time (eval mode, no grad), the part's largest cost
COMPILED = {"live-rounds": 0}
# seconds per part, each cut to what is left of the budget
LIMITS = {"bench_eager": 120, "study": 240, "bench_compile": 240}
CPU_SMOKE_SLOWDOWN = 3


def _bench_args(mode: str, compile_: bool) -> list[str]:
    options = {**BENCH[mode], **(COMPILED if compile_ else {})}
    return [arg for key, value in options.items() for arg in (f"--{key}", str(value))]


def _run(cmd: list[str], log: Path, limit: float, env: dict | None = None) -> dict | None:
    """Run `cmd` with its output in `log`; None when it succeeded, else what went wrong. On
    timeout the whole process group goes (snakemake's jobs with it)."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=max(limit, 1))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            return {"error": f"timed out after {limit:.0f} s", "log_tail": _tail(log)}
    if rc != 0:
        return {"error": f"exit status {rc}", "log_tail": _tail(log)}
    return None


def _tail(path: Path, lines: int = 25) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def bench_part(mode: str, tmp: Path, limit: float, compile_: bool = False) -> dict:
    name = "bench-compile" if compile_ else "bench-eager"
    out = tmp / f"{name}.json"
    cmd = [sys.executable, "-m", "scalinglab", "bench", "train", *_bench_args(mode, compile_),
           "--json", str(out)] + (["--compile"] if compile_ else [])
    started = time.perf_counter()
    failed = _run(cmd, tmp / f"{name}.log", limit)
    if failed:
        return failed
    result = json.loads(out.read_text())
    result["wall_seconds"] = time.perf_counter() - started
    return result


def study_part(mode: str, tmp: Path, limit: float) -> dict:
    workdir = tmp / "study"
    workdir.mkdir()
    configs = [str(STUDY_CONFIG)]
    if mode == "cpu-smoke":
        cpu = tmp / "cpu.yaml"
        cpu.write_text("training:\n  device: cpu\n")
        configs.append(str(cpu))
    bindir = Path(sys.executable).parent
    snakemake = shutil.which("snakemake", path=f"{bindir}{os.pathsep}{os.environ['PATH']}")
    if snakemake is None:
        return {"error": "snakemake not found beside the interpreter or on PATH"}
    cores = "2" if mode == "cpu-smoke" else str(min(8, os.cpu_count() or 1))
    cmd = [snakemake, "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", cores, "--configfile", *configs, "--", STUDY_TARGET]
    # the jobs run this interpreter's scalinglab (PATH first, as tests/helpers.py does)
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}")
    started = time.perf_counter()
    failed = _run(cmd, tmp / "study.log", limit, env=env)
    wall = time.perf_counter() - started
    if failed:
        return {**failed, "wall_seconds": wall}
    return {"config": str(STUDY_CONFIG.relative_to(REPO)), "wall_seconds": wall,
            **summarise_study(workdir)}


def summarise_study(workdir: Path) -> dict:
    """The trained runs (device, steps, loss, tokens/s) and the IsoFLOP fit of a finished study."""
    runs = []
    for path in sorted(glob.glob(str(workdir / "results/runs/isoflop/*/*/run.json"))):
        record = json.loads(Path(path).read_text())
        rows = [json.loads(line) for line in
                (Path(path).parent / "metrics.jsonl").read_text().splitlines()]
        speeds = sorted(row["tokens_per_s"] for row in rows if row["tokens_per_s"] > 0)
        runs.append({
            "run": str(Path(path).parent.relative_to(workdir / "results/runs/isoflop")),
            "kind": record["kind"], "device": record["device"], "steps": record["steps"],
            "final_val_loss": rows[-1]["val_loss"] if rows else None,
            "tokens_per_s": speeds[len(speeds) // 2] if speeds else None,
            "wall_seconds": record["wall_seconds"],
            "tensorboard": (Path(path).parent / "tensorboard").is_dir(),
        })
    fit = json.loads((workdir / STUDY_TARGET).read_text())
    return {"runs": runs, "devices": sorted({run["device"] for run in runs}),
            "n_stable": sum(run["kind"] == "stable" for run in runs),
            "n_branches": sum(run["kind"] == "branch" for run in runs),
            "fit": {key: fit[key] for key in ("a", "b", "points", "budgets") if key in fit}}


def _host() -> dict:
    def version(package: str) -> str | None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    try:
        git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):  # no git, or not a checkout
        git = None
    return {"python": platform.python_version(), "torch": version("torch"),
            "snakemake": version("snakemake"), "machine": platform.machine(),
            "cpus": os.cpu_count(), "git": git}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/gpu-check.sh", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", default="results/gpu-check.json",
                        help="the JSON to write (default results/gpu-check.json)")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="run on the CPU in seconds: a tiny model, no compile")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for all parts together (default 470; --cpu-smoke: "
                        f"{CPU_SMOKE_SLOWDOWN} times that, and each part's limit too)")
    args = parser.parse_args(argv)
    mode = "cpu-smoke" if args.cpu_smoke else "gpu"
    # the CPU smoke checks the plumbing on a 2-core machine, where the mini study's 20 jobs and
    # its fit take minutes, not the GPU's timing
    slowdown = CPU_SMOKE_SLOWDOWN if args.cpu_smoke else 1
    if args.budget is None:
        args.budget = 470.0 * slowdown
    start = time.perf_counter()
    result = {"mode": mode, "started": datetime.datetime.now(datetime.UTC).isoformat(
        timespec="seconds"), "host": _host(), "budget_seconds": args.budget}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def left(part: str) -> float:
        return min(LIMITS[part] * slowdown, args.budget - (time.perf_counter() - start))

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        tmp = Path(tmp)
        parts = {
            "bench_eager": lambda: bench_part(mode, tmp, left("bench_eager")),
            "study": lambda: study_part(mode, tmp, left("study")),
            "bench_compile": lambda: (
                {"skipped": "--cpu-smoke: no torch.compile on the CPU"} if mode == "cpu-smoke"
                else bench_part(mode, tmp, left("bench_compile"), compile_=True)),
        }
        for name, part in parts.items():
            if left(name) < 10:
                result[name] = {"skipped": "the budget was spent"}
            else:
                print(f"gpu-check: {name} ...", file=sys.stderr, flush=True)
                result[name] = part()
            result["wall_seconds"] = time.perf_counter() - start
            atomic.write_json(out, result)
            print(f"gpu-check: {name}: {_one_line(result[name])}", file=sys.stderr, flush=True)
    print(f"wrote {out}")
    return 0 if not any("error" in result[name] for name in parts) else 1


def _one_line(part: dict) -> str:
    if "error" in part or "skipped" in part:
        return part.get("error") or part["skipped"]
    if "ratio" in part:
        mfu = part["mfu"]
        return (f"{part['project_tokens_per_s']:.0f} tokens/s, ratio {part['ratio']['median']:.3f}"
                f", MFU {'n/a' if mfu is None else f'{mfu:.1%}'}, "
                f"peak {part['peak_memory_gib']:.2f} GiB")
    return (f"{len(part['runs'])} runs on {', '.join(part['devices'])} in "
            f"{part['wall_seconds']:.0f} s")


if __name__ == "__main__":
    raise SystemExit(main())
