"""bench train: the median's interval by order statistics, PaLM's FLOP count, and a tiny run
that fills every figure (no timed asserts: speed is what the benchmark prints)."""

from __future__ import annotations

import argparse
import math

import pytest

from helpers import one_thread  # noqa: F401
from scalinglab.model.gpt import GPTConfig
from scalinglab.training import bench


def test_median_interval_takes_the_binomial_order_statistics():
    x = [float(v) for v in (9, 1, 8, 2, 7, 3, 6, 4, 5, 10)]
    # n = 10: P(Bin(10, 1/2) <= 1) = 11/1024 <= 2.5% < P(<= 2) = 56/1024, so k = 2
    lo, hi, coverage = bench.median_interval(x)
    assert (lo, hi) == (2.0, 9.0)
    assert coverage == pytest.approx(1 - 2 * 11 / 1024)
    # n = 12: P(<= 2) = 79/4096 <= 2.5%, so k = 3
    lo, hi, coverage = bench.median_interval(list(range(12)))
    assert (lo, hi) == (2, 9)
    assert coverage == pytest.approx(1 - 2 * 79 / 4096)
    # n = 5: even (min, max) covers only 1 - 2/32 = 93.75%
    assert bench.median_interval([1, 2, 3, 4, 5]) is None
    assert bench.median_interval([1, 2, 3, 4, 5, 6]) == (1, 6, pytest.approx(1 - 2 / 64))


def test_palm_flops_per_token_by_hand():
    cfg = GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_embd=16, n_head=2)
    non_embedding = 12 * 16**2 + 2 * 16 + 16  # (4 + 2r) d^2 per block, two norms, final norm
    assert bench.palm_flops_per_token(cfg) == 6 * (non_embedding + 16 * 64) + 12 * 16 * 16


def test_peak_flops_by_device_name():
    assert bench.peak_flops_of("NVIDIA H200") == 989e12
    assert bench.peak_flops_of("NVIDIA H100 80GB HBM3") == 989e12  # SXM
    assert bench.peak_flops_of("NVIDIA H100 PCIe") == 756e12
    assert bench.peak_flops_of("NVIDIA A100-SXM4-80GB") == 312e12
    assert bench.peak_flops_of("Tesla T4") is None  # unknown: MFU null


def test_a_tiny_bench_fills_every_figure(capsys):
    args = argparse.Namespace(n_layer=1, n_embd=16, n_head=2, block_size=16, batch_size=2,
                              vocab_size=64, steps=1, rounds=6, live_rounds=6, live_steps=2,
                              live_eval_every=1, threads=1, compile=False, json=None)
    result = bench.measure(args)
    for key in ("project_tokens_per_s", "bare_tokens_per_s", "model_flops_per_s",
                "peak_memory_gib"):
        assert math.isfinite(result[key]) and result[key] > 0, key
    assert result["mfu"] is None and result["peak_flops"] is None  # a CPU has no peak
    for summary in (result["ratio"], result["live"]["ratio"]):
        assert summary["rounds"] == 6 and len(summary["per_round"]) == 6
        lo, hi = summary["interval"]
        assert lo <= summary["median"] <= hi  # at n = 6 the interval is (min, max)
        assert (lo, hi) == (min(summary["per_round"]), max(summary["per_round"]))
    live = result["live"]
    assert live["seconds_per_eval"] > 0 and 0 < live["share_of_time"] < 1
    assert 0 < live["share_at_default_eval_every"] < live["share_of_time"]  # 1 eval per step
    text = bench.report(result)
    assert "ratio project / bare  : median" in text and "interval [" in text
    assert "live writing on / off : median" in text
