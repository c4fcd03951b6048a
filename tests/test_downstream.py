"""Downstream accuracy: the task from val.bin, the scorer against an oracle and a uniform model,
the loss -> accuracy sigmoid, training writing final_accuracy, the CLI, the recipe and the DAG."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import (REPO, job_counts, one_thread, snakemake, tiny_spec,  # noqa: F401
                     write_spec, write_token_dir)
from scalinglab import cli, downstream, metrics, recipe, train
from scalinglab.config import StudyConfig, from_dict
from scalinglab.downstream import DownstreamConfig
from scalinglab.errors import UserError

SMALL = DownstreamConfig(enabled=True, items=12, context_tokens=5, continuation_tokens=3,
                         choices=4)


def counting_tokens(n: int = 1000) -> np.ndarray:
    """Token t at position t (mod 997): each span is recognisable by its first token."""
    return (np.arange(n) % 997).astype(np.uint16)


# -- the task ------------------------------------------------------------------------------------
def test_task_is_deterministic_with_the_truth_where_the_rng_put_it():
    tokens = counting_tokens()
    task = downstream.build_task(tokens, SMALL)
    again = downstream.build_task(tokens, SMALL)
    np.testing.assert_array_equal(task.sequences, again.sequences)
    assert task.sequences.shape == (12, 4, 8) and task.chance == 0.25
    expected = np.random.default_rng(downstream.TASK_SEED).integers(0, 4, size=12)
    np.testing.assert_array_equal(task.answer, expected)
    stride = 1000 // 12  # 83: evenly spaced, non-overlapping spans of 8 tokens
    for i in range(12):
        start = i * stride
        for c in range(4):  # every candidate shares the item's context
            np.testing.assert_array_equal(task.sequences[i, c, :5], np.arange(start, start + 5))
        truth = task.sequences[i, task.answer[i], 5:]
        np.testing.assert_array_equal(truth, np.arange(start + 5, start + 8))
        # the distractors are the continuations of items i + 3, i + 6, i + 9 (mod 12)
        others = sorted(int(task.sequences[i, c, 5]) for c in range(4) if c != task.answer[i])
        assert others == sorted(((i + j * 3) % 12) * stride + 5 for j in (1, 2, 3))


def test_too_small_val_split_names_the_key_and_the_counts():
    with pytest.raises(UserError, match=r"downstream\.items: 12 items of 8 tokens need 96 "
                                        r"validation tokens, the split has 90"):
        downstream.build_task(counting_tokens(90), SMALL)


@pytest.mark.parametrize("section, key", [
    ({"choices": 1}, "downstream.choices"),
    ({"items": 0}, "downstream.items"),
    ({"items": 3, "choices": 4}, "downstream.items"),
    ({"continuation_tokens": -2}, "downstream.continuation_tokens"),
    ({"context_tokens": 100, "enabled": True}, "downstream.context_tokens"),
    ({"typo": 1}, "downstream.typo"),
])
def test_bad_config_keys_are_user_errors_naming_the_key(section, key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        from_dict(StudyConfig, {"model": {"block_size": 64, "sizes": [
            {"n_layer": 1, "n_embd": 8, "n_head": 1}]}, "downstream": section})


def test_a_task_longer_than_the_context_is_fine_while_downstream_is_off():
    cfg = from_dict(StudyConfig, {"model": {"block_size": 32, "sizes": [
        {"n_layer": 1, "n_embd": 8, "n_head": 1}]}, "downstream": {"enabled": False}})
    assert cfg.downstream.span == 80


# -- the scorer ----------------------------------------------------------------------------------
class Oracle(torch.nn.Module):
    """All probability on token t + 1 after token t (counting_tokens' rule)."""

    def forward(self, idx):
        logits = torch.full((*idx.shape, 997), -1e4)
        logits.scatter_(-1, ((idx + 1) % 997).unsqueeze(-1), 0.0)
        return logits, None


class Uniform(torch.nn.Module):
    def forward(self, idx):
        return torch.zeros(*idx.shape, 997), None


def test_an_oracle_scores_one_and_a_uniform_model_scores_chance_exactly():
    task = downstream.build_task(counting_tokens(), SMALL)
    oracle, uniform = Oracle().train(), Uniform()
    assert downstream.accuracy(oracle, task, "cpu", batch=5) == 1.0
    assert oracle.training  # put back in training mode
    # four-way ties everywhere: 1/4 credit each, whatever position the truth has
    assert downstream.accuracy(uniform, task, "cpu", batch=7) == 0.25


def test_ties_share_the_credit():
    scores = np.array([[1.0, 1.0, 0.0], [2.0, 1.0, 2.0], [0.0, 3.0, 1.0]])
    # item 0: truth 0 in a 2-way tie (1/2); item 1: truth 1 not best (0); item 2: truth 1 best
    assert downstream.score_choices(scores, np.array([0, 1, 1])) == pytest.approx(0.5)


# -- the sigmoid ---------------------------------------------------------------------------------
TRUE = {"top": 0.8, "k": 3.0, "L_mid": 4.0}


def synthetic(noise: float = 0.0, n: int = 18, seed: int = 0):
    rng = np.random.default_rng(seed)
    loss = np.linspace(2.5, 6.0, n)
    acc = downstream.sigmoid(loss, 0.25, TRUE["top"], TRUE["k"], TRUE["L_mid"])
    return loss, acc + noise * rng.standard_normal(n)


def test_sigmoid_fit_recovers_known_parameters():
    loss, acc = synthetic()
    fit = downstream.fit_sigmoid(loss, acc, 0.25, n_boot=20)
    for name, value in TRUE.items():
        assert fit[name] == pytest.approx(value, abs=1e-3), name
    assert fit["n_points"] == 18 and fit["rmse"] < 1e-6
    assert downstream.predict(fit, 4.0) == pytest.approx(0.25 + 0.55 / 2, abs=1e-4)


def test_noisy_sigmoid_interval_holds_the_truth_and_nan_rows_are_left_out():
    # a bootstrap of 18 points covers less than its nominal 95% (measured over noise seeds
    # 0-19: top 17/20, k and L_mid 18/20); this draw is one of the covered ones
    loss, acc = synthetic(noise=0.01, seed=2)
    loss = np.append(loss, [np.nan, 3.0])
    acc = np.append(acc, [0.5, np.nan])
    fit = downstream.fit_sigmoid(loss, acc, 0.25, n_boot=300, seed=1)
    assert fit["n_points"] == 18
    for name, value in TRUE.items():
        low, high = fit["ci"][name]
        assert low <= value <= high, (name, low, high)
    low, high = downstream.predict_interval(fit, [3.9, 4.1])
    truth = [downstream.sigmoid(x, 0.25, **{"top": 0.8, "k": 3.0, "l_mid": 4.0})
             for x in (4.1, 3.9)]
    assert low <= truth[0] < truth[1] <= high  # the higher loss gives the lower end
    point = downstream.predict(fit, 4.0)
    assert low < point < high


def test_fewer_than_four_points_is_a_user_error():
    with pytest.raises(UserError, match=r"3 runs with both a finite loss and an accuracy"):
        downstream.fit_sigmoid([3.0, 4.0, 5.0, float("nan")], [0.5, 0.4, 0.3, 0.2], 0.25)
