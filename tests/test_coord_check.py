"""The coordinate check: muP flat across width, SP growing, and a broken muP caught; across
depth, CompleteP flat, muP growing, and a CompleteP without its branch multiplier caught."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from helpers import (
    REPO,
    one_thread,  # noqa: F401 (an autouse fixture: one torch thread)
    write_token_dir,
)
from scalinglab import cli
from scalinglab.errors import UserError
from scalinglab.parametrization import ParametrizationConfig
from scalinglab.training.coord_check import (
    DEPTH_EXPECTED_TO_PASS,
    MAX_FLAT_GROWTH,
    CoordCheckShape,
    check,
    coord_check,
    depth_check,
    growth,
    verdict,
    width_slopes,
)

WIDTHS = [64, 128, 256, 512]  # 8x, as the issue asks
SHAPE = CoordCheckShape(n_layer=1, n_head=4, block_size=16, batch_size=4, vocab_size=128)


def without_logit_multiplier(label, gpt_cfg):
    # the classic muP bug: hidden rules in place, but the logits not divided by m
    if label == "broken-mup":
        pcfg = ParametrizationConfig("mup", base_width=64)
        return dataclasses.replace(gpt_cfg, logit_scale=pcfg.output_mult)
    return gpt_cfg



@pytest.fixture(scope="module")
def table(one_thread) -> pd.DataFrame:  # noqa: F811 (the fixture, requested so it runs first)
    pcfgs = {
        "sp": ParametrizationConfig("sp", base_width=64),
        "mup": ParametrizationConfig("mup", base_width=64),
        "broken-mup": ParametrizationConfig("mup", base_width=64),
    }
    return coord_check(WIDTHS, pcfgs, steps=3, lr=1e-2, seeds=(0,), shape=SHAPE,
                       adjust=without_logit_multiplier)


def test_table_has_every_site_step_and_width(table):
    sites = {"emb", "h.0.attn", "h.0.mlp", "logits"}
    assert set(table["site"]) == sites
    assert len(table) == 3 * len(WIDTHS) * 4 * len(sites)  # variants x widths x steps 0..3
    assert (table["rms"] > 0).all()


def test_mup_logits_are_flat_across_width(table):
    ratio = growth(table, "logits", step=3)["mup"]
    assert 1 / MAX_FLAT_GROWTH < ratio < MAX_FLAT_GROWTH
    assert check(table)["mup"] is True


def test_sp_logits_grow_with_width(table):
    ratio = growth(table, "logits", step=3)["sp"]
    assert ratio > 2 * MAX_FLAT_GROWTH  # measured ~8-13x over 8x width
    assert check(table)["sp"] is False


def test_broken_mup_fails_the_check(table):
    assert growth(table, "logits", step=3)["broken-mup"] > MAX_FLAT_GROWTH
    assert check(table)["broken-mup"] is False


def test_hidden_branches_grow_under_sp_and_not_under_mup(table):
    slopes = width_slopes(table, step=3).set_index(["parametrization", "site"])["slope"]
    for site in ("h.0.attn", "h.0.mlp"):
        assert slopes[("sp", site)] > 1.0, site  # SP: an Adam step grows like fan_in
        assert abs(slopes[("mup", site)]) < 0.5, site
    # embeddings have no width-sized fan-in: flat under both
    assert abs(slopes[("sp", "emb")]) < 0.1 and abs(slopes[("mup", "emb")]) < 0.1


def test_at_base_width_mup_and_sp_record_the_same_numbers():
    same = dict(base_width=64, attn_scale="sqrt")
    pcfgs = {"sp": ParametrizationConfig("sp", **same),
             "mup": ParametrizationConfig("mup", **same)}
    out = coord_check([64, 64], pcfgs, steps=2, shape=SHAPE)
    sp = out[out["parametrization"] == "sp"]["rms"].to_numpy()
    mup = out[out["parametrization"] == "mup"]["rms"].to_numpy()
    assert (sp == mup).all()


def test_growth_on_a_hand_made_table():
    rows = [{"parametrization": p, "width": w, "seed": s, "step": 3, "site": "logits",
             "rms": rms} for p, w, s, rms in [("a", 64, 0, 1.0), ("a", 512, 0, 3.0),
                                               ("a", 64, 1, 1.0), ("a", 512, 1, 5.0),
                                               ("b", 64, 0, 2.0), ("b", 512, 0, 2.2)]]
    table = pd.DataFrame(rows)
    assert growth(table) == {"a": 4.0, "b": pytest.approx(1.1)}
    assert check(table) == {"a": False, "b": True}
    with pytest.raises(UserError, match="step 7"):
        growth(table, step=7)


def test_verdict_says_sp_grows_mup_is_flat_and_a_broken_mup_is_caught(table):
    out = verdict(table, step=3)
    assert out["expected"] == {"sp": False, "mup": True}  # broken-mup has no expectation
    assert out["as_expected"] is True
    assert out["widths"] == WIDTHS and out["max_flat_growth"] == MAX_FLAT_GROWTH
    p = out["parametrizations"]
    assert p["sp"]["passes"] is False and p["mup"]["passes"] is True
    assert p["sp"]["growth"] == growth(table, "logits", 3)["sp"]
    assert set(p["mup"]["slopes"]) == {"emb", "h.0.attn", "h.0.mlp", "logits"}
    assert p["sp"]["slopes"]["h.0.mlp"] > 1.0
    assert p["broken-mup"]["passes"] is False and p["broken-mup"]["as_expected"] is None
    # judged as if it were the muP of the study, the broken one fails the verdict
    assert verdict(table, expected={"sp": False, "broken-mup": True})["as_expected"] is False
    json.dumps(out, allow_nan=False)  # plain JSON


def test_verdict_on_a_hand_made_table():
    rows = [{"parametrization": p, "width": w, "seed": 0, "step": 3, "site": site, "rms": rms}
            for p, w, rms in [("sp", 64, 1.0), ("sp", 256, 4.0), ("mup", 64, 1.0),
                              ("mup", 256, 1.0)]
            for site in ("emb", "logits")]
    out = verdict(pd.DataFrame(rows))
    assert out["parametrizations"]["sp"]["growth"] == 4.0
    assert out["parametrizations"]["sp"]["slopes"]["logits"] == pytest.approx(1.0)
    assert out["parametrizations"]["mup"]["slopes"]["emb"] == pytest.approx(0.0)
    assert out["as_expected"] is True
    # SP flat too (say, muP rules applied to both by mistake): not as expected
    flat = pd.DataFrame([dict(r, rms=1.0) for r in rows])
    assert verdict(flat)["as_expected"] is False
    assert verdict(flat)["parametrizations"]["sp"]["as_expected"] is False


def test_cli_writes_csv_and_figure_from_a_token_dir(tmp_path):
    tokens = write_token_dir(tmp_path / "tokens", vocab=64)
    csv, png, out = tmp_path / "cc.csv", tmp_path / "cc.png", tmp_path / "cc.json"
    code = cli.main(["coord-check", "--data-dir", str(tokens), "--widths", "64", "128",
                     "--steps", "2", "--seeds", "0", "--n-layer", "1", "--block-size", "16",
                     "--batch-size", "4", "--threads", "1", "--csv-out", str(csv),
                     "--figure-out", str(png), "--json-out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["step"] == 2 and result["widths"] == [64, 128]  # min(3, steps)
    assert set(result["parametrizations"]) == {"sp", "mup"}
    assert isinstance(result["as_expected"], bool)
    out = pd.read_csv(csv)
    assert set(out["parametrization"]) == {"sp", "mup"}
    assert sorted(out["width"].unique()) == [64, 128]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_width_below_base_is_exit_2_naming_the_key(tmp_path, capsys):
    code = cli.main(["coord-check", "--widths", "16", "32", "--steps", "1",
                     "--csv-out", str(tmp_path / "cc.csv"),
                     "--figure-out", str(tmp_path / "cc.png")])
    assert code == 2
    assert "parametrization.base_width" in capsys.readouterr().err
    assert not (tmp_path / "cc.csv").exists()


def test_the_default_target_plans_the_verdict_in_the_coord_check_job(tmp_path):
    snakemake = Path(sys.executable).parent / "snakemake"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    result = subprocess.run([str(snakemake), "-s", str(REPO / "Snakefile"), "--directory",
                             str(tmp_path), "--summary"], capture_output=True, text=True,
                            timeout=600, env=env)
    assert result.returncode == 0, result.stderr
    made_by = {line.split("\t")[0]: line.split("\t")[2] for line in result.stdout.splitlines()
               if line.count("\t") >= 2}
    assert made_by["results/muP/coord_check.json"] == "coord_check"


# ---------------------------------------------------------------- across depth (CompleteP)

DEPTHS = [2, 4, 8]  # 4x, as the issue asks


def without_branch_multiplier(label, gpt_cfg):
    # CompleteP's LR, eps and init rules in place, but residual branches not divided by m_d
    return dataclasses.replace(gpt_cfg, residual_scale=1.0) if label == "broken-completep" \
        else gpt_cfg


@pytest.fixture(scope="module")
def depth_table(one_thread) -> pd.DataFrame:  # noqa: F811 (the fixture, requested so it runs first)
    pcfgs = {
        "mup": ParametrizationConfig("mup", base_width=64),
        "completep": ParametrizationConfig("completep", base_width=64, base_depth=2),
        "broken-completep": ParametrizationConfig("completep", base_width=64, base_depth=2),
    }
    # width 64 and lr 3e-3 (depth_check's defaults); seeds 0, 1 averaged
    return depth_check(DEPTHS, pcfgs, width=64, steps=4, lr=3e-3, seeds=(0, 1), shape=SHAPE,
                       adjust=without_branch_multiplier)


def test_depth_table_records_the_residual_stream_of_every_depth(depth_table):
    at = depth_table[(depth_table["depth"] == 8) & (depth_table["parametrization"] == "mup")]
    assert {"emb", "resid", "logits", "h.0.attn", "h.7.mlp"} <= set(at["site"])
    assert set(depth_table["depth"]) == set(DEPTHS) and set(depth_table["step"]) == set(range(5))
    assert (depth_table["rms"] > 0).all()
    # at base depth CompleteP is muP: the same numbers
    base = depth_table[depth_table["depth"] == 2].set_index(["parametrization", "seed", "step",
                                                               "site"])["rms"]
    assert (base["mup"] == base["completep"]).all()


def test_residual_stream_is_flat_across_depth_at_init(depth_table):
    """At init GPT-2's 1/sqrt(2 n_layer) projection init keeps muP flat in depth too, and
    CompleteP (its init held at the base depth, branches / m_d) as well: measured 1.0x, 0.87x."""
    ratios = growth(depth_table, "resid", step=0, axis="depth")
    for label in ("mup", "completep"):
        assert 1 / MAX_FLAT_GROWTH < ratios[label] < MAX_FLAT_GROWTH, label


def test_after_a_few_steps_completep_stays_flat_and_mup_grows_with_depth(depth_table):
    """Measured over seeds 0-4 one at a time (this shape): muP 2.2-4.8x, CompleteP 0.64-1.03x,
    CompleteP without its multiplier 3.3-5.7x, from depth 2 to 8 at step 4."""
    ratios = growth(depth_table, "resid", step=4, axis="depth")
    assert 1 / MAX_FLAT_GROWTH < ratios["completep"] < MAX_FLAT_GROWTH
    assert ratios["mup"] > MAX_FLAT_GROWTH
    assert ratios["broken-completep"] > MAX_FLAT_GROWTH
    verdicts = check(depth_table, "resid", step=4, axis="depth")
    assert {k: verdicts[k] for k in DEPTH_EXPECTED_TO_PASS} == DEPTH_EXPECTED_TO_PASS
    assert verdicts["broken-completep"] is False


def test_depth_check_refuses_a_single_depth():
    with pytest.raises(UserError, match="depths"):
        depth_check([4], {"mup": ParametrizationConfig("mup", base_width=64)}, shape=SHAPE)

