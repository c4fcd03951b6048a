"""Study expansion: run ids, tokens from budgets, branch points, exclusions, epoch check."""

from __future__ import annotations

import pandas as pd
import pytest

from scalinglab.config import StudyConfig, from_dict
from scalinglab.errors import UserError
from scalinglab.model.flops import model_counts
from scalinglab.phases.study import (
    check_epochs,
    excluded_runs,
    format_number,
    gpt_config,
    plan_isoflop,
    series_spec,
    trained_runs,
)

BASE = {
    "tokenizer": {"vocab_size": 512},
    "model": {"block_size": 32, "sizes": [
        {"n_layer": 1, "n_embd": 16, "n_head": 2},
        {"n_layer": 2, "n_embd": 32, "n_head": 4},
    ]},
    "training": {"batch_size": 8, "lr": 3e-3, "warmup_tokens": 256},
    "isoflop": {"budgets": [1e10, 3e10], "min_steps": 5},
}


def _cfg(**overrides) -> StudyConfig:
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE.items()}
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    return from_dict(StudyConfig, data)


@pytest.mark.parametrize(("x", "text"), [
    (3e-3, "3e-03"), (1e-4, "1e-04"), (2.5e-3, "2.5e-03"), (1e12, "1e12"), (1.5e12, "1.5e12"),
    (16, "16"), (0.2, "2e-01"), (123456789.0, "1.235e8"),
])
def test_format_number_is_canonical(x, text):
    assert format_number(x) == text


def test_run_ids_and_tokens_follow_from_the_budget():
    table = plan_isoflop(_cfg())
    assert len(table) == 4
    assert list(table["run_id"][:2]) == ["sp-l1-d16-h2-lr3e-03-b8_C1e10",
                                         "sp-l1-d16-h2-lr3e-03-b8_C3e10"]
    assert table["run_id"].is_unique
    cfg = _cfg()
    for row in table.itertuples():
        size = next(s for s in cfg.model.sizes if s.n_embd == row.n_embd)
        fpt = model_counts(gpt_config(cfg, size), "6N+attn+head").flops_per_token
        assert row.flops_per_token == fpt
        assert row.steps == round(row.C / (fpt * 8 * 32))
        assert row.D == row.steps * 256
        # linear WSD decay over the last 20% of the branch's steps
        assert row.decay_start == row.steps - round(0.2 * row.steps)
    # one stable run per size runs to its last branch point
    stable = table.groupby("series_id")["stable_steps"].first()
    assert (stable == table.groupby("series_id")["decay_start"].max()).all()


def test_short_runs_are_left_out_with_a_reason():
    table = plan_isoflop(_cfg(isoflop={"budgets": [1e10, 3e10], "min_steps": 200}))
    left_out = excluded_runs(table)
    assert len(left_out) >= 1
    assert left_out["reason"].str.contains("min_steps").all()
    assert len(trained_runs(table)) + len(left_out) == 4


def test_token_limit_shortens_the_stable_run_of_small_models():
    cfg = _cfg(isoflop={"budgets": [1e10, 3e10], "min_steps": 5, "max_tokens_per_param": 60})
    table = plan_isoflop(cfg)
    small = table[table.n_embd == 16]
    assert list(small["reason"] == "") == [True, False]  # 3e10 means > 60 tokens per param
    assert "max_tokens_per_param" in small["reason"].iloc[1]
    assert (small["stable_steps"] == small["decay_start"].iloc[0]).all()
    spec = series_spec(cfg, table, small["series_id"].iloc[0]).to_dict()
    assert spec["stable_steps"] < spec["branches"][1]["decay_start"]


def test_decay_inside_warmup_is_left_out():
    table = plan_isoflop(_cfg(training={"warmup_tokens": 130 * 256}))
    reasons = excluded_runs(table)["reason"]
    assert reasons.str.contains("inside the warmup").any()


def test_budget_too_small_for_any_run_is_a_user_error():
    with pytest.raises(UserError, match="isoflop.budgets"):
        plan_isoflop(_cfg(isoflop={"budgets": [1e3, 1e10]}))


def test_head_must_divide_width():
    bad = {"sizes": [{"n_layer": 1, "n_embd": 10, "n_head": 3}]}
    with pytest.raises(UserError, match=r"model.sizes\[0\]"):
        plan_isoflop(_cfg(model=bad))


def test_too_many_epochs_is_refused_before_training():
    cfg = _cfg(isoflop={"budgets": [1e10, 3e10], "min_steps": 5, "max_epochs": 2})
    table = plan_isoflop(cfg)
    most = int(trained_runs(table)["D"].max())
    with_epochs = check_epochs(cfg, table, train_tokens=most)  # exactly one epoch: fine
    assert with_epochs["epochs"].max() == pytest.approx(1.0)
    with pytest.raises(UserError, match="isoflop.max_epochs"):
        check_epochs(cfg, table, train_tokens=most // 3)


def test_series_spec_lists_every_label():
    cfg = _cfg(isoflop={"budgets": [1e10, 3e10], "min_steps": 200})
    table = plan_isoflop(cfg)
    for sid in table["series_id"].unique():
        spec = series_spec(cfg, table, sid).to_dict()
        assert [b["label"] for b in spec["branches"]] == ["C1e10", "C3e10"]
        rows = table[table.series_id == sid]
        assert spec["stable_steps"] == rows["decay_start"].max()
        assert [b["trained"] for b in spec["branches"]] == list(rows["reason"] == "")
    assert isinstance(table, pd.DataFrame)


def test_cosine_runs_start_from_step_zero():
    table = plan_isoflop(_cfg(schedule={"kind": "cosine"}))
    assert (table["decay_start"] == 0).all()
    assert (table["stable_steps"] == 0).all()
    assert (table["schedule"] == "cosine").all()
