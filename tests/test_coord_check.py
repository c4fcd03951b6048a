"""The coordinate check: muP flat across width, SP growing, and a broken muP caught."""

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
from scalinglab.coord_check import (
    MAX_FLAT_GROWTH,
    CoordCheckShape,
    check,
    coord_check,
    growth,
    verdict,
    width_slopes,
)
from scalinglab.errors import UserError
from scalinglab.parametrization import ParametrizationConfig

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
