"""Job resources: runtime grows with the job's FLOPs and with each retry; memory with the
parameters; a GPU (and its model) only for a CUDA study; the preemption signal for every job."""

import json
import re

import pytest

from helpers import REPO, snakemake, tiny_spec
from scalinglab.cli.main import merged_config
from scalinglab.config import StudyConfig, from_dict
from scalinglab.phases import (
    critical_batch,
    hparams,
    lr_transfer,
    recipe,
    study,
    variants,
    wsd_vs_cosine,
)
from scalinglab.phases.base import FIRST
from scalinglab.training.resources import (
    MIN_RUNTIME_MINUTES,
    PREEMPTION_SIGNAL,
    SIGNAL_LEAD_SECONDS,
    TrainingJob,
    TrainingResources,
    branch_job,
    gpu_model,
    gpus,
    runtime_minutes,
    stable_job,
    train_mem_mb,
    training_job,
)


def test_runtime_is_margin_times_flops_over_throughput_in_minutes():
    assert runtime_minutes(6e13, 1e9, 3.0) == 3000  # 3 * 6e4 s = 3000 min
    assert runtime_minutes(6e13, 1e9, 3.0, attempt=2) == 6000
    assert runtime_minutes(1.0, 1e9, 3.0) == MIN_RUNTIME_MINUTES


def test_memory_grows_with_parameters():
    assert train_mem_mb(0) == 1500
    assert train_mem_mb(2**20) == 1532
    assert train_mem_mb(10**9) > 30_000


# tiny_spec: 4 x 16 = 64 tokens a step, 20,000 FLOPs a token, an eval of 256 tokens every 4 steps
# (a forward pass: 20,000 / 3 FLOPs a token), stable run of 24 steps, branches C1 (16 -> 20) and
# C2 (24 -> 30)
def test_stable_job_is_its_steps_and_evaluations_by_hand():
    job = stable_job(tiny_spec())
    # 24 steps; evaluations every 4 steps (6), at both branch points and at the end (9)
    assert job == TrainingJob(24 * 64 * 20_000 + 9 * 256 * 20_000 / 3, 5000)
    assert job.flops == pytest.approx(46_080_000)


def test_branch_job_is_its_own_steps_from_its_decay_start():
    spec = tiny_spec()
    # C1: steps 16..20 (4 steps, evaluations at 20 and at the end: 4 // 4 + 1)
    assert branch_job(spec, "C1").flops == pytest.approx(4 * 64 * 20_000 + 2 * 256 * 20_000 / 3)
    # C2: steps 24..30
    assert branch_job(spec, "C2").flops == pytest.approx(6 * 64 * 20_000 + 2 * 256 * 20_000 / 3)
    assert branch_job(spec, "C2").n_total == 5000
    assert training_job(spec, "C2") == branch_job(spec, "C2")
    assert training_job(spec) == stable_job(spec)


def test_a_cosine_branch_trains_from_step_zero():
    spec = tiny_spec(stable_steps=0, branches=((0, 20, "C1"),), kind="cosine")
    assert branch_job(spec, "C1").flops == pytest.approx(20 * 64 * 20_000
                                                         + 6 * 256 * 20_000 / 3)
    assert stable_job(spec).flops == pytest.approx(2 * 256 * 20_000 / 3)  # evaluations only


def test_an_unknown_branch_names_the_series_and_its_branches():
    with pytest.raises(KeyError, match="test-series has no branch 'C9'.*C1, C2"):
        branch_job(tiny_spec(), "C9")


def test_runtime_of_a_job_scales_with_its_flops_and_the_attempt():
    res = TrainingResources(flops_per_second=1e4, margin=3.0, device="cpu")
    spec = tiny_spec()
    stable = res.runtime(stable_job(spec))
    assert stable == 231  # 3 x 46,080,000 / 1e4 s = 230.4 min
    assert res.runtime(stable_job(spec), attempt=2) == 461
    assert res.runtime(stable_job(spec), attempt=3) == 692
    # C2 does fewer FLOPs than the stable run, C1 fewer still
    c1, c2 = res.runtime(branch_job(spec, "C1")), res.runtime(branch_job(spec, "C2"))
    assert c1 == 43 and c2 == 56  # 42.7 and 55.5 min
    assert res.runtime(branch_job(spec, "C2"), attempt=2) == 111
    assert res.mem_mb(stable_job(spec)) == train_mem_mb(5000)


def test_only_a_cuda_study_asks_for_a_gpu_and_its_model():
    assert gpus("cuda") == 1
    assert gpus("cpu") == gpus("auto") == 0
    assert gpu_model("cuda", " h100 ") == "h100"
    assert gpu_model("cuda", "") is None and gpu_model("cuda", None) is None
    # a CPU job never names a model: the SLURM plugin would ask for --gpus=h100:0
    assert gpu_model("cpu", "h100") is None and gpu_model("auto", "h100") is None
    cuda = TrainingResources(2e9, 3.0, "cuda", "a100")
    assert (cuda.gpu, cuda.gpu_model) == (1, "a100")
    cpu = TrainingResources(2e9, 3.0, "cpu", "a100")
    assert (cpu.gpu, cpu.gpu_model) == (0, None)


def test_the_signal_comes_well_before_the_shortest_time_limit():
    assert PREEMPTION_SIGNAL == "--signal=USR1@180"
    assert TrainingResources(2e9, 3.0, "cpu").slurm_extra == PREEMPTION_SIGNAL
    # SLURM may send it up to a minute early; the trainer needs a few seconds to save
    assert SIGNAL_LEAD_SECONDS + 60 < MIN_RUNTIME_MINUTES * 60 / 2


# -- every training rule of every phase, through a dry run of the workflow ---------------------
TRAINING_RULES = {
    "train_stable_isoflop", "decay_branch_isoflop",  # the IsoFLOP spine
    *(REFINEMENT_RULES := {"train_stable_isoflop_r1", "decay_branch_isoflop_r1"}),  # round 1
    "train_stable_lr_transfer", "decay_branch_lr_transfer",
    "train_stable_variant", "decay_branch_variant",
    "train_stable_hparams", "decay_branch_hparams", "train_stable_critical_batch",
    "train_stable_wsd", "decay_branch_wsd", "train_stable_cosine", "decay_branch_cosine",
    "train_stable_validation", "decay_branch_validation",
}
RESOURCE_NAMES = ("runtime", "mem_mb", "gpu", "gpu_model", "slurm_extra")
# a slow machine: every job's runtime is well above the 10-minute floor, so it shows its FLOPs
SLOW = 1.0e+6
RUN_JSON = re.compile(r"results/runs/(\w+)/([^/,\s]+)/([^/,\s]+)/run\.json")



def planned_jobs(output: str) -> list[dict]:
    """rule, output, resources and priority of every job a dry run lists."""
    jobs = []
    for block in re.split(r"^(?:local)?(?:rule|checkpoint) ", output, flags=re.MULTILINE)[1:]:
        name, _, body = block.partition(":\n")
        fields = dict(re.findall(r"^    (\w+): (.*)$", body, flags=re.MULTILINE))
        resources = dict(item.split("=", 1) for item in fields.get("resources", "").split(", ")
                         if "=" in item)
        jobs.append({"rule": name.strip(), "output": fields.get("output", ""),
                     "resources": resources, "priority": float(fields.get("priority", 0))})
    return jobs


def phase_specs(cfg) -> dict:
    """The series spec of every run, by its folder under results/runs: what each phase's write
    rule writes and its training jobs train."""
    tables = {
        "isoflop": (study.series_spec, study.plan_isoflop(cfg)),
        "lr_transfer": (lr_transfer.series_spec, lr_transfer.plan(cfg)),
        "variants": (variants.series_spec, variants.plan(cfg)),
        "hparams": (hparams.series_spec, hparams.plan(cfg)),
        "critical_batch": (critical_batch.series_spec, critical_batch.plan(cfg)),
        "wsd_vs_cosine": (wsd_vs_cosine.series_spec, wsd_vs_cosine.plan(cfg)),
    }
    return {phase: (lambda sid, fn=fn, table=table: fn(cfg, table, sid))
            for phase, (fn, table) in tables.items()}


def test_every_training_job_of_every_phase_asks_for_its_flops_a_gpu_and_the_signal(tmp_path):
    """Every phase on (the shipped hparams and variants configs over config.yaml), a CUDA
    device, a GPU model and a slow machine: each training job's runtime is margin x its own
    FLOPs / throughput, its memory that of its model, and it asks for one GPU of the model and
    for the preemption signal."""
    device = tmp_path / "device.yaml"
    # a GPU cluster: a job per branch
    device.write_text(f"training: {{device: cuda}}\nresources: {{flops_per_second: {SLOW}, "
                      "branch_jobs: branch}\n")
    configs = [str(REPO / "workflow/configs/full.yaml"),
               str(REPO / "workflow/configs/hparams.yaml"),
               str(REPO / "workflow/configs/variants.yaml"), str(device)]
    cfg = from_dict(StudyConfig, merged_config([str(REPO / "config.yaml"), *configs]))
    # the validation run's spec is written by a job once the recipe exists: put one in place
    sid, label = recipe.validation_ids(cfg)
    validation = {**tiny_spec(branches=((16, 20, label),)), "flops_per_token": 2.0e+9,
                  "N_total": 3_000_000}
    spec_file = tmp_path / "results/specs/validation" / f"{sid}.json"
    spec_file.parent.mkdir(parents=True)
    spec_file.write_text(json.dumps(validation))
    specs = {**phase_specs(cfg), "validation": lambda _: validation}

    result = snakemake(tmp_path, "-n", "--cores", "2", "--configfile", *configs,
                       env={"SCALINGLAB_GPU_MODEL": "h100"})
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = [job for job in planned_jobs(result.stdout + result.stderr)
            if RUN_JSON.search(job["output"])]
    # a dry run cannot plan the refinement round: its checkpoint has not run
    assert {job["rule"] for job in jobs} == TRAINING_RULES - REFINEMENT_RULES

    expected = TrainingResources(SLOW, cfg.resources.runtime_margin, "cuda")
    for job in jobs:
        phase, series, run = RUN_JSON.search(job["output"]).groups()
        work = training_job(specs[phase](series), None if run == "stable" else run)
        asked = {name: job["resources"].get(name) for name in RESOURCE_NAMES}
        assert asked == {
            "runtime": str(expected.runtime(work)), "mem_mb": str(expected.mem_mb(work)),
            "gpu": "1", "gpu_model": "h100", "slurm_extra": "--signal=USR1@180",
        }, (job["rule"], job["output"])
        assert expected.runtime(work) > MIN_RUNTIME_MINUTES, job["rule"]
    # longest first among the training jobs; the round's short steps before any of them
    assert all(0 < job["priority"] < FIRST for job in jobs)
    everything = {job["rule"]: job for job in planned_jobs(result.stdout + result.stderr)}
    for rule in ("collect_isoflop_round", "fit_isoflop_round", "plan_isoflop_round",
                 "fit_schedule_law"):
        assert everything[rule]["priority"] == FIRST, rule
    assert everything["plot_isoflop"]["priority"] == 0
    # stable runs and branches of different lengths and sizes ask for different times
    by_rule = {}
    for job in jobs:
        by_rule.setdefault(job["rule"], set()).add(job["resources"]["runtime"])
    assert len(by_rule["decay_branch_isoflop"]) > 1 and len(by_rule["train_stable_hparams"]) > 1


def test_a_cpu_study_asks_for_no_gpu_and_names_no_model(tmp_path):
    result = snakemake(tmp_path, "-n", "--cores", "2", "--configfile",
                       str(REPO / "tests/smoke.yaml"), env={"SCALINGLAB_GPU_MODEL": "h100"})
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = [job for job in planned_jobs(result.stdout + result.stderr)
            if job["rule"] in TRAINING_RULES]
    assert {job["rule"] for job in jobs} == {"train_stable_isoflop", "decay_branch_isoflop"}
    for job in jobs:
        assert job["resources"]["gpu"] == "0" and "gpu_model" not in job["resources"]
        assert job["resources"]["slurm_extra"] == "--signal=USR1@180"


def test_every_rule_that_trains_takes_its_resources_from_one_factory():
    """The rules whose shell runs `train stable` or `train branch` are written once, in train.smk,
    and ask runtime, mem_mb, gpu, gpu_model and slurm_extra of one `JobResources` object, so a
    new phase's training job cannot miss the GPU or the signal: no other rule file trains."""
    found = {}
    for path in sorted((REPO / "workflow/rules").glob("*.smk")):
        text = path.read_text()
        factories = set(re.findall(r"^\s+(\w+) = JobResources\.of\(", text, re.M))
        for body in text.split("rule:\n")[1:]:
            if not re.search(r"python -m scalinglab train (stable|branch) ", body):
                continue
            # (the one-job-per-series branch rule is also numbered by its set of labels)
            name = re.match(r"\s+name:\n\s+f\"(\w+)\{group\.name\}(?:_\{index\})?\"", body)
            assert name, path.name  # a rule in a loop is named after its training group
            assert re.search(r"python -m scalinglab train (stable|branch) ", body)
            found[name.group(1)] = path.name
            block = body.split("resources:\n")[1].split("params:")[0]
            # every resource from the one factory (JobResources.directive), nothing besides
            owners = re.findall(r"^\s+\*\*(\w+)\.directive\(\),$", block, re.M)
            assert len(owners) == 1 and set(owners) <= factories, (name, block)
            assert len(block.strip().splitlines()) == 1, block
        if path.name != "train.smk":
            assert not re.search(r"python -m scalinglab train (stable|branch) ", text), path
    assert found == {"train_stable_": "train.smk", "decay_branch_": "train.smk",
                     "decay_branches_": "train.smk"}


def test_every_phase_trains_through_the_shared_rules(tmp_path):
    """With every phase on, the shared definitions give each phase's rules (by group name)."""
    configs = [str(REPO / "workflow/configs" / name)
               for name in ("full.yaml", "hparams.yaml", "variants.yaml")]
    branch = tmp_path / "branch.yaml"
    branch.write_text("resources:\n  branch_jobs: branch\n")
    result = snakemake(tmp_path, "--list-rules", "--configfile", *configs, str(branch))
    assert result.returncode == 0, result.stderr[-3000:]
    rules = set(result.stdout.split())
    assert {r for r in rules if r.startswith(("train_stable", "decay_branch"))} == TRAINING_RULES

    # config.yaml's one job per series: a rule per set of trained labels replaces each group's
    # branch rule; the refinement round, whose series are planned while the DAG runs, has one
    result = snakemake(tmp_path, "--list-rules", "--configfile", *configs)
    assert result.returncode == 0, result.stderr[-3000:]
    rules = set(result.stdout.split())
    per_series = {r for r in rules if r.startswith("decay_branches_")}
    branch_rules = {r for r in TRAINING_RULES if r.startswith("decay_branch_")}
    assert not {r for r in rules if r.startswith("decay_branch_")}
    assert "decay_branches_isoflop_r1_0" in per_series
    assert {re.sub(r"_\d+$", "", r).replace("branches", "branch") for r in per_series} == \
        branch_rules


def test_a_data_parallel_job_holds_the_memory_once_per_process():
    assert train_mem_mb(2**20, processes=2) == 2 * train_mem_mb(2**20)


def test_a_job_that_decays_a_series_branches_asks_for_their_summed_flops():
    import pandas as pd

    from scalinglab.phases.base import JobResources, TrainingGroup

    spec = {**tiny_spec(branches=((16, 20, "C1"), (24, 30, "C2"))), "flops_per_token": 2.0e+9,
            "N_total": 3_000_000}
    table = pd.DataFrame({"series_id": ["s", "s", "t"], "label": ["C1", "C2", "C1"],
                          "reason": ["", "", ""]})
    group = TrainingGroup("g", "runs", "specs", table, {"s": spec, "t": spec})
    assert group.branch_batches() == [(["C1", "C2"], "s", False), (["C1"], "t", False)]
    slow = TrainingResources(SLOW, 3.0, "cuda")

    class Wildcards:
        series = "s"
        label = "C1"

    one = JobResources.of(slow, group, branch=True)
    both = JobResources.of(slow, group, branch=True, labels=["C1", "C2"])
    flops = training_job(spec, "C1").flops + training_job(spec, "C2").flops
    runtime = both.runtime(Wildcards, None, 1)
    assert runtime == slow.runtime(TrainingJob(flops, training_job(spec, "C1").n_total))
    assert runtime > one.runtime(Wildcards, None, 1) > MIN_RUNTIME_MINUTES


def test_a_job_ranks_by_the_flops_that_wait_on_it(tmp_path):
    """Longest first: a stable run counts its own FLOPs and its branches' (their one job under
    branch_jobs: series, else the longest), a branch job its own; all below the FIRST of a long
    analysis step; a job whose spec is not written yet ranks lowest."""
    import pandas as pd

    import scalinglab.phases as phases
    from scalinglab.phases.base import JobResources, TrainingGroup

    spec = {**tiny_spec(branches=((16, 20, "C1"), (24, 30, "C2"))), "flops_per_token": 2.0e+9,
            "N_total": 3_000_000}
    table = pd.DataFrame({"series_id": ["s", "s"], "label": ["C1", "C2"], "reason": ["", ""]})
    group = TrainingGroup("g", "runs", "specs", table, {"s": spec})
    settings = TrainingResources(SLOW, 3.0, "cpu")

    class Wildcards:
        series = "s"
        label = "C2"

    stable, c1, c2 = (training_job(spec, label).flops for label in (None, "C1", "C2"))
    assert c2 > c1

    def rank(flops):
        return flops / (flops + 1e12)

    series = JobResources.of(settings, group, series_branch_jobs=True).priority(Wildcards, None)
    per_branch = JobResources.of(settings, group).priority(Wildcards, None)
    batch = JobResources.of(settings, group, branch=True, labels=["C1", "C2"])
    branch = JobResources.of(settings, group, branch=True)
    assert series == pytest.approx(rank(stable + c1 + c2), rel=1e-12)
    assert per_branch == pytest.approx(rank(stable + c2), rel=1e-12)
    assert batch.priority(Wildcards, None) == pytest.approx(rank(c1 + c2), rel=1e-12)
    assert branch.priority(Wildcards, None) == pytest.approx(rank(c2), rel=1e-12)
    assert FIRST > series > per_branch > batch.priority(Wildcards, None) > 0

    # a spec that a job writes: lowest until it exists, then its FLOPs
    written = TrainingGroup("v", "runs", "specs", table, None)

    class Input:
        spec = str(tmp_path / "s.json")

    job = JobResources.of(settings, written, series_branch_jobs=True)
    assert job.priority(Wildcards, Input) == 0.0
    (tmp_path / "s.json").write_text(json.dumps(spec))
    assert job.priority(Wildcards, Input) == pytest.approx(series, rel=1e-12)

    # the schedule-law fit (long, beside the refinement round) starts before training
    cfg = from_dict(StudyConfig, merged_config([str(REPO / "config.yaml")]))
    steps = {step.name: step for step in phases.steps(cfg, phases.training_groups(cfg))}
    assert steps["fit_schedule_law"].priority == FIRST
    assert steps["plot_isoflop"].priority == 0
