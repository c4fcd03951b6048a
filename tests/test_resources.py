"""Job resources: runtime grows with FLOPs and with each retry; memory with the parameters."""

from scalinglab.resources import MIN_RUNTIME_MINUTES, runtime_minutes, train_mem_mb


def test_runtime_is_margin_times_flops_over_throughput_in_minutes():
    assert runtime_minutes(6e13, 1e9, 3.0) == 3000  # 3 * 6e4 s = 3000 min
    assert runtime_minutes(6e13, 1e9, 3.0, attempt=2) == 6000
    assert runtime_minutes(1.0, 1e9, 3.0) == MIN_RUNTIME_MINUTES


def test_memory_grows_with_parameters():
    assert train_mem_mb(0) == 1500
    assert train_mem_mb(2**20) == 1532
    assert train_mem_mb(10**9) > 30_000


def test_a_data_parallel_job_holds_the_memory_once_per_process():
    assert train_mem_mb(2**20, processes=2) == 2 * train_mem_mb(2**20)
