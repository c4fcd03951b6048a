"""The schedule-law phase: the LR traces it builds from a spec, and its per-series fit with the
leave-one-out check of each branch, on curves the law itself generated."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from helpers import tiny_spec
from scalinglab.errors import UserError
from scalinglab.fitting.schedule_law import predict
from scalinglab.phases import schedule_law
from scalinglab.training.schedule import Schedule

TRUE = {"L0": 2.5, "A": 0.8, "alpha": 0.45, "B": 300.0, "C": 1.5, "beta": 0.5, "gamma": 0.6}


def long_spec() -> dict:
    """A series of 2000 stable steps with three WSD branches (decay over the last 20%)."""
    spec = tiny_spec(stable_steps=1600, branches=((800, 1000, "C1"), (1200, 1500, "C2"),
                                                  (1600, 2000, "C3")))
    spec["warmup_steps"] = 50
    return spec


def test_lr_trace_is_the_trainers_schedule_shifted_by_one_update():
    spec = long_spec()
    peak = spec["training"]["lr"]
    branch = spec["branches"][1]
    lr = schedule_law.lr_trace(spec, branch)
    sched = Schedule(kind="wsd", warmup_steps=50, total_steps=1500, decay_start=1200,
                     shape="linear", final_ratio=0.0)
    assert len(lr) == 1500 + 1
    assert lr[0] == lr[1] == peak * sched(0)
    for i in (1, 2, 49, 50, 51, 1200, 1201, 1400, 1500):
        assert lr[i] == pytest.approx(peak * sched(i - 1), rel=0, abs=0)
    stable = schedule_law.lr_trace(spec)
    assert len(stable) == 1600 + 1
    # rewinding: the branch is the stable run up to its decay start, then decays to zero
    np.testing.assert_array_equal(lr[:1201], stable[:1201])
    assert lr[1201] < peak and lr[-1] == pytest.approx(peak * sched(1499))


def synthetic_curves(spec: dict, noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """curves.csv rows whose losses come from the law with TRUE parameters."""
    rng = np.random.default_rng(seed)
    rows = []
    runs = [("stable", "stable", None)] + [("branch", b["label"], b) for b in spec["branches"]]
    for kind, label, branch in runs:
        lr = schedule_law.lr_trace(spec, branch)
        first = 20 if branch is None else branch["decay_start"] + 20
        steps = np.arange(first, len(lr), 20)
        loss = predict("mpl", TRUE, lr, steps) * (1 + noise * rng.standard_normal(len(steps)))
        rows += [{"series_id": spec["series_id"], "kind": kind, "label": label, "step": int(s),
                  "loss": float(v), "diverged": False} for s, v in zip(steps, loss, strict=True)]
    return pd.DataFrame(rows)


def test_the_fit_predicts_each_left_out_branch_of_noise_free_curves():
    spec = long_spec()
    fit = schedule_law.analyse(synthetic_curves(spec), [spec])
    size = fit["sizes"][0]
    assert size["n_curves"] == 4
    assert set(size["branches"]) == {"C1", "C2", "C3"}
    for row in size["branches"].values():
        assert row["in_sample"]["final_rel_error"] < 1e-4
        assert row["leave_one_out"]["final_rel_error"] < 2e-3
    assert fit["leave_one_out_final_rel_error"]["n"] == 3
    assert size["params"]["L0"] == pytest.approx(TRUE["L0"], rel=2e-2)


def test_a_branch_the_law_cannot_predict_stands_out():
    spec = long_spec()
    curves = synthetic_curves(spec, noise=1e-3)
    odd = (curves["label"] == "C2") & (curves["step"] > 1200)
    curves.loc[odd, "loss"] *= 1.05  # the last 300 steps of one branch went wrong
    branches = schedule_law.analyse(curves, [spec])["sizes"][0]["branches"]
    # the robust (Huber) fit of all curves leaves the odd branch out of the law
    errors = {label: row["in_sample"]["final_rel_error"] for label, row in branches.items()}
    assert errors["C2"] > 0.03
    assert max(errors["C1"], errors["C3"]) < 0.005
    # and no other branch is predicted worse than it when left out
    left_out = {label: row["leave_one_out"]["final_rel_error"] for label, row in branches.items()}
    assert max(left_out, key=left_out.get) == "C2"


def test_lr_table_lists_every_update_of_every_trained_run():
    spec = long_spec()
    spec["branches"][0]["trained"] = False
    table = schedule_law.lr_table([spec])
    counts = table.groupby("run").size().to_dict()
    assert counts == {"test-series_stable": 1601, "test-series_C2": 1501, "test-series_C3": 2001}


def test_no_curve_is_a_user_error():
    spec = long_spec()
    empty = synthetic_curves(spec).iloc[:0]
    with pytest.raises(UserError, match="no series has a curve"):
        schedule_law.analyse(empty, [spec])


def test_the_verb_writes_fit_table_and_figure_and_refuses_a_bad_table(tmp_path):
    spec = long_spec()
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    synthetic_curves(spec, noise=5e-4).to_csv(tmp_path / "curves.csv", index=False)
    out = {name: tmp_path / name for name in ("fit.json", "lr.csv", "fig.png")}
    cmd = [sys.executable, "-m", "scalinglab", "schedule-law", "fit", "--curves",
           str(tmp_path / "curves.csv"), "--specs", str(tmp_path / "spec.json"), "--out",
           str(out["fit.json"]), "--lr-out", str(out["lr.csv"]), "--figure", str(out["fig.png"])]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(out["fit.json"].read_text())["sizes"][0]["series_id"] == "test-series"
    assert len(pd.read_csv(out["lr.csv"])) == 1601 + 1001 + 1501 + 2001
    assert out["fig.png"].read_bytes()[:4] == b"\x89PNG"

    pd.DataFrame({"step": [1]}).to_csv(tmp_path / "bad.csv", index=False)
    cmd[cmd.index("--curves") + 1] = str(tmp_path / "bad.csv")
    bad = subprocess.run(cmd, capture_output=True, text=True)
    assert bad.returncode == 2 and "missing column" in bad.stderr
