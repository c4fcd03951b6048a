"""Job resources: runtime grows with the job's FLOPs and with each retry; memory with the
parameters; a GPU (and its model) only for a CUDA study; the preemption signal for every job."""

import pytest

from helpers import tiny_spec
from scalinglab.resources import (
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
