"""The smoke study on a real single-node SLURM cluster (scripts/slurm-local.sh), through
`snakemake --executor slurm --workflow-profile workflow/profiles/slurm`.

One module-scoped run does the expensive part: the IsoFLOP pipeline of tests/smoke.yaml under SLURM,
with one training job sent SIGUSR1 mid-run (what a training job's `--signal=USR1@180` sends ahead of
its time limit) and `--restart-times 0`, so the first invocation fails; a second invocation resumes
it.
The tests then check the outputs, `sacct`, and the resumed run's losses against an uninterrupted
one.
A last test switches the cluster to its fake-GPU mode and checks that a CUDA study's training job is
scheduled with a GPU and fails with a clear error on a machine without CUDA.

Needs root and apt-get (the cluster is installed from Debian packages on first use); skipped with
the reason otherwise, or when SCALINGLAB_SKIP_SLURM is set. The daemons the fixture started are
stopped at the end.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO
from scalinglab.cli.main import merged_config
from scalinglab.config import StudyConfig, from_dict
from scalinglab.phases.study import plan_isoflop

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SCRIPT = REPO / "scripts" / "slurm-local.sh"
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
# The runs below use a copy of the workflow taken once per session (see `snapshot_workflow`)
WORKFLOW = {"root": REPO}
ACCOUNT = "scalinglab"  # the account slurm-local.sh creates
PARTITION = "local"
# The IsoFLOP pipeline: data, every training job, metrics and one figure. The fits and the other
# study phases add nothing that SLURM treats differently, only minutes.
TARGETS = ["results/metrics/runs.csv", "results/figures/loss_curves.png"]
RUNS = Path("results/runs/isoflop")
LOCK = Path("/run/lock/scalinglab-slurm-tests.lock")
CALL = 30  # seconds for one SLURM client call


def env() -> dict:
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                SCALINGLAB_SLURM_ACCOUNT=ACCOUNT, SCALINGLAB_SLURM_PARTITION=PARTITION)


def cluster(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout)


def slurm(*args: str) -> str:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=CALL, check=True)
    return result.stdout


def root() -> Path:
    return WORKFLOW["root"]


def smoke() -> Path:
    return root() / "tests" / "smoke.yaml"


def snapshot_workflow(dest: Path) -> Path:
    """A copy of the Snakefile, config, rules, profiles and smoke config. The module's runs take
    minutes while others edit the tree; a config or rule changed between the local plan, the
    interrupted run and the rerun gave a rerun that did nothing and exited 0."""
    for name in ("Snakefile", "config.yaml", "tests/smoke.yaml"):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "workflow", dest / "workflow",
                    ignore=shutil.ignore_patterns("__pycache__", ".snakemake"))
    return dest


def snakemake_cmd(workdir: Path, *args: str, configs=None, limit: int = 420) -> list[str]:
    configs = configs or (smoke(),)
    # SIGINT, not SIGTERM: the SLURM executor ignores SIGTERM while it polls job states
    return ["timeout", "-s", "INT", "-k", "60", str(limit), SNAKEMAKE,
            "-s", str(root() / "Snakefile"), "--directory", str(workdir),
            "--configfile", *map(str, configs),
            "--workflow-profile", str(root() / "workflow" / "profiles" / "slurm"),
            "--slurm-init-seconds-before-status-checks", "3", "--latency-wait", "5", *args]


def run_snakemake(workdir: Path, *args: str, configs=None) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_cmd(workdir, *args, configs=configs), capture_output=True,
                          text=True, env=env(), timeout=600)


def run_id(output: str) -> str:
    match = re.search(r"SLURM run ID: (\S+)", output)
    assert match, output[-3000:]
    return match.group(1)


def sacct_jobs(name: str) -> list[dict]:
    out = slurm("sacct", "-X", "-n", "-P", "--name", name, "--starttime", "now-1days",
                "--format=JobID,State,Comment%200,AllocTRES%200")
    keys = ("id", "state", "comment", "tres")
    return [dict(zip(keys, line.split("|"), strict=True)) for line in out.splitlines() if line]


def local_plan(workdir: Path, *targets: str) -> subprocess.Popen:
    """A dry run of the local executor in an empty folder: what a local run would make."""
    with (workdir / "plan.txt").open("w") as out:  # a file, not a pipe nobody reads yet
        return subprocess.Popen(
            [SNAKEMAKE, "-s", str(root() / "Snakefile"), "--directory", str(workdir),
             "--configfile", str(smoke()), "--workflow-profile",
             str(root() / "workflow" / "profiles" / "local"), "-n", *targets],
            stdout=out, stderr=subprocess.STDOUT, text=True, env=env())


def planned_files(plan: subprocess.Popen, workdir: Path) -> set[str]:
    """Every output, log and benchmark file of the jobs in a dry run's listing."""
    plan.wait(timeout=300)
    listing = (workdir / "plan.txt").read_text()
    assert plan.returncode == 0, listing[-3000:]
    files = set()
    for match in re.finditer(r"^\s+(?:output|log|benchmark): (.+)$", listing, re.MULTILINE):
        files.update(part.strip() for part in match.group(1).split(", "))
    return files


def produced_files(workdir: Path) -> set[str]:
    return {str(p.relative_to(workdir)) for p in (workdir / "results").rglob("*") if p.is_file()}


def val_losses(metrics_jsonl: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in metrics_jsonl.read_text().splitlines()]
    return [(row["step"], row["val_loss"]) for row in rows]


# -- the cluster ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_slurm():
    """A running local cluster; stopped at the end if this fixture started it."""
    if os.environ.get("SCALINGLAB_SKIP_SLURM"):
        pytest.skip("SCALINGLAB_SKIP_SLURM is set")
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root (it installs and starts system daemons)")
    if shutil.which("sbatch") is None and shutil.which("apt-get") is None:
        pytest.skip("SLURM is not installed and there is no apt-get to install it")
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    lock = LOCK.open("w")
    deadline = time.monotonic() + 600
    while True:  # one test session at a time may drive (and stop) the cluster
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                pytest.skip(f"another test session holds {LOCK}")
            time.sleep(2)
    was_running = cluster("status", timeout=120).returncode == 0
    start = time.monotonic()
    started = cluster("start")
    print(f"slurm-local.sh start: {time.monotonic() - start:.1f} s\n{started.stderr}")
    if started.returncode == 3:
        lock.close()
        pytest.skip(started.stderr.strip().splitlines()[-1])
    assert started.returncode == 0, started.stdout + started.stderr
    state = {"gpu": False}
    yield state
    if not was_running:
        stopped = cluster("stop", timeout=300)
        print(stopped.stderr)
        assert stopped.returncode == 0, stopped.stderr
    elif state["gpu"]:
        cluster("start")  # back to the mode it had
    lock.close()


# -- the smoke study, interrupted once -------------------------------------------------------------
def longest_series() -> str:
    """The series whose stable run is longest: the most time to catch it running."""
    cfg = from_dict(StudyConfig, merged_config([str(root() / "config.yaml"), str(smoke())]))
    table = plan_isoflop(cfg)
    return str(table.groupby("series_id")["stable_steps"].max().idxmax())


@pytest.fixture(scope="module")
def interrupted_run(local_slurm, tmp_path_factory):
    WORKFLOW["root"] = snapshot_workflow(tmp_path_factory.mktemp("workflow"))
    workdir = tmp_path_factory.mktemp("slurm-smoke")
    series = longest_series()
    plan_dir = tmp_path_factory.mktemp("plan")
    plan = local_plan(plan_dir, *TARGETS)
    first_out = tmp_path_factory.mktemp("first") / "snakemake.txt"
    with first_out.open("w") as out:
        first = subprocess.Popen(snakemake_cmd(workdir, "--restart-times", "0", *TARGETS),
                                 stdout=out, stderr=subprocess.STDOUT, text=True, env=env())
    resume = workdir / RUNS / series / "stable" / "resume.pt"
    comment = f"rule_train_stable_isoflop_wildcards_{series}"
    job = None
    try:
        deadline = time.monotonic() + 400
        while job is None and first.poll() is None and time.monotonic() < deadline:
            for line in slurm("squeue", "-h", "-o", "%i|%T|%k").splitlines():
                jid, state, job_comment = line.split("|", 2)
                # after the first periodic checkpoint, so the signal lands mid-training
                if job_comment == comment and state == "RUNNING" and resume.exists():
                    slurm("scancel", "--signal=USR1", jid)
                    job = jid
            time.sleep(0.2)
        first.wait(timeout=600)
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGINT)
            first.wait(timeout=120)
    output = first_out.read_text()
    assert job is not None, f"{comment} was never seen running\n{output[-3000:]}"
    first_log = (workdir / "results/logs/train_stable_isoflop" / f"{series}.log").read_text()
    resume_after_signal = resume.exists()

    # the same series uninterrupted, on the same spec and tokens, while the rerun goes on
    reference = subprocess.Popen(
        [sys.executable, "-m", "scalinglab", "train", "stable", "--spec",
         f"results/specs/isoflop/{series}.json", "--data-dir", "results/data/tokens",
         "--out-dir", str(workdir / "reference"), "--threads", "1"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env())
    second = run_snakemake(workdir, *TARGETS)
    expected = planned_files(plan, plan_dir)
    ref_output, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, ref_output[-3000:]
    return {"workdir": workdir, "series": series, "job": job, "expected": expected,
            "first_rc": first.returncode, "first": output, "first_log": first_log,
            "resume_after_signal": resume_after_signal, "second": second}


def test_smoke_study_under_slurm_produces_the_local_plans_files(interrupted_run):
    second = interrupted_run["second"]
    assert second.returncode == 0, (second.stdout + second.stderr)[-4000:]
    workdir = interrupted_run["workdir"]
    produced = produced_files(workdir)
    # no stray resume.pt or pending/ checkpoints, nothing missing
    assert produced == interrupted_run["expected"], (
        sorted(produced - interrupted_run["expected"]),
        sorted(interrupted_run["expected"] - produced), (second.stdout + second.stderr)[-3000:])
    runs = (workdir / "results/metrics/runs.csv").read_text().splitlines()
    assert len(runs) - 1 == sum(1 for p in produced if re.search(r"/C[^/]+/run\.json$", p))


def test_every_job_went_through_sbatch_and_shows_in_sacct(interrupted_run):
    first = sacct_jobs(run_id(interrupted_run["first"]))
    second = sacct_jobs(run_id(interrupted_run["second"].stdout + interrupted_run["second"].stderr))
    states = {job["id"]: job["state"] for job in first + second}
    assert states.pop(interrupted_run["job"]) == "FAILED"  # the one sent SIGUSR1
    assert set(states.values()) == {"COMPLETED"}
    comments = [job["comment"] for job in first + second]
    series = interrupted_run["series"]
    # failed, then resumed
    assert comments.count(f"rule_train_stable_isoflop_wildcards_{series}") == 2
    trained = {p.split("/")[3] for p in interrupted_run["expected"]
               if p.endswith("/stable/run.json")}
    for sid in trained:
        assert f"rule_train_stable_isoflop_wildcards_{sid}" in comments
    branches = [p for p in interrupted_run["expected"] if re.search(r"/C[^/]+/run\.json$", p)]
    decays = sum(c.startswith("rule_decay_branch_isoflop_wildcards_") for c in comments)
    assert decays == len(branches)
    assert any(c.startswith("rule_data_") for c in comments)  # the profile's data group


def test_signalled_training_job_saves_and_its_rerun_resumes_with_the_same_losses(interrupted_run):
    assert interrupted_run["first_rc"] != 0  # --restart-times 0: the failed job stops the run
    saved = re.search(r"signal 10: saved \S+ at step (\d+)", interrupted_run["first_log"])
    assert saved, interrupted_run["first_log"][-2000:]
    assert interrupted_run["resume_after_signal"]
    workdir, series = interrupted_run["workdir"], interrupted_run["series"]
    rerun_log = (workdir / "results/logs/train_stable_isoflop" / f"{series}.log").read_text()
    assert re.search(rf"resuming from \S+ at step {saved.group(1)}\b", rerun_log), rerun_log
    stable = workdir / RUNS / series / "stable"
    reference = workdir / "reference"
    got, want = val_losses(stable / "metrics.jsonl"), val_losses(reference / "metrics.jsonl")
    assert [step for step, _ in got] == [step for step, _ in want]
    assert [loss for _, loss in got] == pytest.approx([loss for _, loss in want], rel=1e-6)
    import torch

    for checkpoint in sorted(reference.glob("branch-*.pt")):
        a = torch.load(checkpoint, map_location="cpu", weights_only=False)
        b = torch.load(stable / checkpoint.name, map_location="cpu", weights_only=False)
        if "model" not in a:  # a placeholder for a branch that is not trained
            assert a == b
            continue
        for name, tensor in a["model"].items():
            assert torch.equal(tensor, b["model"][name]), (checkpoint.name, name)


# -- GPU requests on the fake GPU ------------------------------------------------------------------
def wait_for_job(jid: str, seconds: int = 120) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        out = slurm("sacct", "-X", "-n", "-P", "-j", jid, "--format=State,AllocTRES%200")
        if out.strip() and out.split("|")[0] not in ("PENDING", "RUNNING", "COMPLETING"):
            state, tres = out.strip().split("|")
            return {"state": state, "tres": tres}
        time.sleep(0.5)
    raise AssertionError(f"SLURM job {jid} did not finish in {seconds} s")


def test_gpu_requests_are_scheduled_on_the_fake_gpu(local_slurm, interrupted_run, tmp_path):
    switched = cluster("start", "--gpu")
    local_slurm["gpu"] = True
    assert switched.returncode == 0, switched.stderr
    assert "gpu:fake:1" in slurm("sinfo", "-h", "-o", "%G")

    out = tmp_path / "gpu.out"
    jid = slurm("sbatch", "--parsable", "-A", ACCOUNT, "--gpus=1", "-o", str(out), "--wrap",
                "echo CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES").strip()
    job = wait_for_job(jid)
    assert job["state"] == "COMPLETED" and "gres/gpu=1" in job["tres"], job
    assert out.read_text().strip() == "CUDA_VISIBLE_DEVICES=0"

    # A CUDA study asks gpu=1 per training job (training_resources); on this machine without CUDA
    # the job gets its GPU from SLURM and then stops with a clear error instead of training on the
    # CPU.
    workdir = tmp_path / "study"
    shutil.copytree(interrupted_run["workdir"], workdir, symlinks=True)
    cuda = tmp_path / "cuda.yaml"
    cuda.write_text("training:\n  device: cuda\n")
    series = interrupted_run["series"]
    target = f"{RUNS}/{series}/stable/run.json"
    # only the new specs and the training job: the epoch check (plan_study) has passed already
    result = run_snakemake(workdir, "--restart-times", "0", "--allowed-rules", "write_spec",
                           "train_stable_isoflop", "--", target, configs=(smoke(), cuda))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    jobs = [j for j in sacct_jobs(run_id(output)) if j["comment"].startswith("rule_train_stable")]
    assert len(jobs) == 1, jobs
    assert jobs[0]["state"] == "FAILED" and "gres/gpu=1" in jobs[0]["tres"], jobs
    log = (workdir / "results/logs/train_stable_isoflop" / f"{series}.log").read_text()
    assert "'cuda' requested but no CUDA device is available" in log, log[-2000:]
