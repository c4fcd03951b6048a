"""`scalinglab fit ...`: the JSON contract, the workflow's runs.csv, bad input (exit 2, no file)."""

import json

import numpy as np
import pandas as pd
import pytest

from scalinglab.cli.main import main
from scalinglab.fitting.parametric import compute_optimal

TRUE = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
A_TRUE = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])


def chinchilla(N, D):
    return TRUE["E"] + TRUE["A"] / N ** TRUE["alpha"] + TRUE["B"] / D ** TRUE["beta"]


def runs_csv(path, budgets=(1e18, 1e19, 1e20, 1e21), sizes=7):
    """A table shaped like the workflow's results/metrics/runs.csv (C given per run)."""
    rows = []
    for C in budgets:
        n_opt, _ = compute_optimal(TRUE, C)
        for k, N in enumerate(n_opt * np.geomspace(1 / 6, 6, sizes)):
            D = C / (6 * N)
            rows.append(
                {
                    "run_id": f"c{C:.0e}-s{k}",
                    "n_layer": 4,
                    "n_embd": 128,
                    "N": N,
                    "N_total": 1.1 * N,
                    "D": D,
                    "C": C,
                    "loss": chinchilla(N, D),
                    "schedule": "wsd",
                    "wall_seconds": 1.0,
                }
            )
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def run_cli(*argv):
    return main([str(a) for a in argv])


def test_isoflop_workflow_contract(tmp_path):
    src = runs_csv(tmp_path / "runs.csv")
    out = tmp_path / "fits" / "isoflop.json"
    assert run_cli("fit", "isoflop", "--input", src, "--out", out) == 0
    fit = json.loads(out.read_text())
    for key in ("a", "k_n", "b", "k_d", "tokens_per_param", "budgets", "dropped", "ci"):
        assert key in fit
    assert fit["a"] == pytest.approx(A_TRUE, abs=1e-6)
    assert fit["b"] == pytest.approx(1 - A_TRUE, abs=1e-6)
    assert fit["flops_convention"] == "C from column 'C', D from column 'D'"
    assert [b["C"] for b in fit["budgets"]] == [1e18, 1e19, 1e20, 1e21]
    for b in fit["budgets"]:
        assert b["tokens_per_param"] == pytest.approx(b["D_opt"] / b["N_opt"])
    top = fit["k_d"] * 1e21 ** fit["b"] / (fit["k_n"] * 1e21 ** fit["a"])
    assert fit["tokens_per_param"] == pytest.approx(top)
    assert fit["tokens_per_param_at_C"] == 1e21
    assert fit["bootstrap"]["n"] == 1000 and fit["ci"]["a"][0] <= fit["a"] <= fit["ci"]["a"][1]


def test_isoflop_derives_d_and_says_so(tmp_path):
    df = pd.read_csv(runs_csv(tmp_path / "runs.csv")).drop(columns=["D"])
    df.to_csv(tmp_path / "noD.csv", index=False)
    out = tmp_path / "fit.json"
    assert (
        run_cli("fit", "isoflop", "--input", tmp_path / "noD.csv", "--out", out, "--bootstrap", 0)
        == 0
    )
    fit = json.loads(out.read_text())
    assert fit["flops_convention"] == "C from column 'C'; D = C/(6N)"
    assert fit["ci"] is None and fit["a"] == pytest.approx(A_TRUE, abs=1e-6)


def test_isoflop_derives_c_from_n_and_d(tmp_path):
    df = pd.read_csv(runs_csv(tmp_path / "runs.csv")).drop(columns=["C"])
    df.to_csv(tmp_path / "noC.csv", index=False)
    out = tmp_path / "fit.json"
    assert (
        run_cli("fit", "isoflop", "--input", tmp_path / "noC.csv", "--out", out, "--bootstrap", 10)
        == 0
    )
    fit = json.loads(out.read_text())
    assert fit["flops_convention"] == "D from column 'D'; C = 6ND"
    assert fit["a"] == pytest.approx(A_TRUE, abs=1e-6)


def test_parametric_json(tmp_path):
    N, D = np.meshgrid(np.geomspace(1e7, 1e10, 6), np.geomspace(1e9, 1e12, 6))
    df = pd.DataFrame({"N": N.ravel(), "C": 6 * N.ravel() * D.ravel()})
    df["loss"] = chinchilla(df["N"], df["C"] / (6 * df["N"]))
    df.loc[3, "loss"] = np.nan
    df.to_csv(tmp_path / "pts.csv", index=False)
    out = tmp_path / "fit.json"
    argv = [
        "fit",
        "parametric",
        "--input",
        tmp_path / "pts.csv",
        "--out",
        out,
        "--bootstrap",
        16,
        "--workers",
        1,
        "--at-compute",
        1e21,
        1e23,
    ]
    assert run_cli(*argv) == 0
    fit = json.loads(out.read_text())
    assert fit["alpha"] == pytest.approx(0.34, abs=1e-3)
    assert fit["beta"] == pytest.approx(0.28, abs=1e-3)
    assert fit["a"] == pytest.approx(A_TRUE, abs=1e-3)
    assert fit["n_points"] == 35 and fit["n_dropped_nan"] == 1
    assert fit["flops_convention"] == "C from column 'C'; D = C/(6N)"
    assert set(fit["ci"]) == {"E", "A", "B", "alpha", "beta", "a"}
    assert [e["C"] for e in fit["at_compute"]] == [1e21, 1e23]
    entry = fit["at_compute"][0]
    n_opt, d_opt = compute_optimal(TRUE, 1e21)
    assert entry["N_opt"] == pytest.approx(n_opt, rel=1e-2)
    assert entry["tokens_per_param"] == pytest.approx(entry["D_opt"] / entry["N_opt"])
    assert entry["loss"] == pytest.approx(chinchilla(n_opt, d_opt), rel=1e-4)
    assert fit["variable_projection"]["alpha"] == pytest.approx(0.34, abs=1e-3)


def test_parametric_fix_beta(tmp_path):
    N, D = np.meshgrid(np.geomspace(1e7, 1e10, 5), np.geomspace(1e9, 1e12, 5))
    df = pd.DataFrame({"N": N.ravel(), "D": D.ravel()})
    df["loss"] = chinchilla(df["N"], df["D"])
    df.to_csv(tmp_path / "pts.csv", index=False)
    out = tmp_path / "fit.json"
    assert (
        run_cli(
            "fit",
            "parametric",
            "--input",
            tmp_path / "pts.csv",
            "--out",
            out,
            "--bootstrap",
            0,
            "--fix-beta",
            0.28,
        )
        == 0
    )
    fit = json.loads(out.read_text())
    assert fit["beta"] == 0.28 and fit["fixed"] == {"alpha": None, "beta": 0.28}
    assert fit["alpha"] == pytest.approx(0.34, abs=1e-3)


def test_envelope_on_curves(tmp_path):
    rows = []
    for k, N in enumerate(np.geomspace(1e7, 1e10, 16)):
        for D in np.geomspace(1e8, 1e12, 30):
            rows.append({"run_id": f"r{k}", "N": N, "D": D, "loss": chinchilla(N, D)})
    pd.DataFrame(rows).to_csv(tmp_path / "curves.csv", index=False)
    out = tmp_path / "env.json"
    assert (
        run_cli(
            "fit",
            "envelope",
            "--input",
            tmp_path / "curves.csv",
            "--out",
            out,
            "--grid-points",
            30,
            "--bootstrap",
            20,
        )
        == 0
    )
    fit = json.loads(out.read_text())
    assert fit["method"] == "envelope" and fit["run_column"] == "run_id"
    assert fit["a"] == pytest.approx(A_TRUE, abs=0.02)
    assert fit["flops_convention"] == "D from column 'D'; C = 6ND"
    assert len(fit["budgets"]) + len(fit["dropped"]) == 30


def test_powerlaw_json(tmp_path):
    x = np.geomspace(1e17, 1e21, 10)
    pd.DataFrame({"C": x, "lr": 0.3118 * x**-0.125, "L": 1.8 + 50 * x**-0.1}).to_csv(
        tmp_path / "xy.csv", index=False
    )
    out = tmp_path / "pl.json"
    assert (
        run_cli(
            "fit",
            "powerlaw",
            "--input",
            tmp_path / "xy.csv",
            "--out",
            out,
            "--x-col",
            "C",
            "--y-col",
            "lr",
            "--bootstrap",
            50,
        )
        == 0
    )
    fit = json.loads(out.read_text())
    assert fit["coef"] == pytest.approx(0.3118, rel=1e-9)
    assert fit["exponent"] == pytest.approx(-0.125, abs=1e-12)
    assert "offset" not in fit and fit["n_points"] == 10
    assert fit["ci"]["exponent"] == pytest.approx([-0.125, -0.125], abs=1e-9)
    assert (
        run_cli(
            "fit",
            "powerlaw",
            "--input",
            tmp_path / "xy.csv",
            "--out",
            out,
            "--x-col",
            "C",
            "--y-col",
            "L",
            "--offset",
            "--bootstrap",
            0,
        )
        == 0
    )
    fit = json.loads(out.read_text())
    assert (fit["offset"], fit["coef"], fit["exponent"]) == pytest.approx((1.8, 50, -0.1))


# ---------------------------------------------------------------- bad input


def assert_user_error(capsys, argv, out, *fragments):
    assert run_cli(*argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, no traceback
    for fragment in fragments:
        assert fragment in err, err
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}*"))  # no temporary file left either


def test_missing_column(tmp_path, capsys):
    df = pd.read_csv(runs_csv(tmp_path / "runs.csv")).drop(columns=["loss"])
    df.to_csv(tmp_path / "bad.csv", index=False)
    out = tmp_path / "fit.json"
    argv = ["fit", "isoflop", "--input", tmp_path / "bad.csv", "--out", out]
    assert_user_error(capsys, argv, out, "bad.csv", "'loss'")


def test_no_flops_column(tmp_path, capsys):
    df = pd.read_csv(runs_csv(tmp_path / "runs.csv")).drop(columns=["C", "D"])
    df.to_csv(tmp_path / "bad.csv", index=False)
    out = tmp_path / "fit.json"
    argv = ["fit", "isoflop", "--input", tmp_path / "bad.csv", "--out", out]
    assert_user_error(capsys, argv, out, "'D'", "'C'")


@pytest.mark.parametrize("column", ["N", "D", "C", "loss"])
def test_non_positive_value(tmp_path, capsys, column):
    df = pd.read_csv(runs_csv(tmp_path / "runs.csv"))
    df.loc[5, column] = 0.0 if column != "loss" else -1.0
    df.to_csv(tmp_path / "bad.csv", index=False)
    out = tmp_path / "fit.json"
    argv = ["fit", "isoflop", "--input", tmp_path / "bad.csv", "--out", out]
    assert_user_error(capsys, argv, out, f"column {column!r}", "non-positive", "row 6")


def test_nan_rows_are_dropped_and_counted(tmp_path):
    df = pd.read_csv(runs_csv(tmp_path / "runs.csv"))
    df.loc[[0, 9], "loss"] = np.nan
    df.to_csv(tmp_path / "nan.csv", index=False)
    out = tmp_path / "fit.json"
    assert (
        run_cli("fit", "isoflop", "--input", tmp_path / "nan.csv", "--out", out, "--bootstrap", 0)
        == 0
    )
    fit = json.loads(out.read_text())
    assert fit["n_dropped_nan"] == 2 and fit["n_points"] == len(df) - 2


def test_diverged_rows_are_left_out_and_counted(tmp_path):
    # runs.csv marks a diverged run; its loss is left out whatever it reads
    df = pd.read_csv(runs_csv(tmp_path / "runs.csv"))
    df["diverged"] = False
    df.loc[[1, 8], "diverged"] = True
    df.loc[1, "loss"] = 0.01  # finite and absurdly good: it must not pull the fit
    df.loc[8, "loss"] = np.nan
    df.loc[15, "loss"] = np.nan
    df.to_csv(tmp_path / "div.csv", index=False)
    out = tmp_path / "fit.json"
    argv = ["fit", "isoflop", "--input", tmp_path / "div.csv", "--out", out, "--bootstrap", 0]
    assert run_cli(*argv) == 0
    fit = json.loads(out.read_text())
    assert fit["n_dropped_diverged"] == 2 and fit["n_dropped_nan"] == 1
    assert fit["n_points"] == len(df) - 3
    # the same fit as on the table without those rows
    df.drop(index=[1, 8, 15]).drop(columns="diverged").to_csv(tmp_path / "ok.csv", index=False)
    ok = tmp_path / "ok.json"
    assert run_cli("fit", "isoflop", "--input", tmp_path / "ok.csv", "--out", ok,
                   "--bootstrap", 0) == 0
    assert fit["a"] == json.loads(ok.read_text())["a"]
    assert fit["a"] == pytest.approx(A_TRUE, abs=1e-2)


def test_too_few_rows_after_nan(tmp_path, capsys):
    df = pd.read_csv(runs_csv(tmp_path / "runs.csv"))
    df.loc[2:, "loss"] = np.nan
    df.to_csv(tmp_path / "few.csv", index=False)
    out = tmp_path / "fit.json"
    argv = ["fit", "isoflop", "--input", tmp_path / "few.csv", "--out", out]
    assert_user_error(capsys, argv, out, "few.csv", "2 usable row(s)", "26 NaN")


def test_too_few_budgets(tmp_path, capsys):
    df = pd.read_csv(runs_csv(tmp_path / "runs.csv", budgets=(1e19,)))
    df.to_csv(tmp_path / "one.csv", index=False)
    out = tmp_path / "fit.json"
    argv = ["fit", "isoflop", "--input", tmp_path / "one.csv", "--out", out]
    assert_user_error(capsys, argv, out, "cannot fit", "1 usable compute budget")


def test_fewer_points_than_parameters(tmp_path, capsys):
    pd.DataFrame({"N": [1e8, 2e8, 4e8], "D": [1e9] * 3, "loss": [3.0, 2.9, 2.8]}).to_csv(
        tmp_path / "tiny.csv", index=False
    )
    out = tmp_path / "fit.json"
    argv = ["fit", "parametric", "--input", tmp_path / "tiny.csv", "--out", out]
    assert_user_error(capsys, argv, out, "tiny.csv", "5 free parameters")


def test_unreadable_and_missing_files(tmp_path, capsys):
    out = tmp_path / "fit.json"
    argv = [
        "fit",
        "powerlaw",
        "--input",
        tmp_path / "nope.csv",
        "--out",
        out,
        "--x-col",
        "x",
        "--y-col",
        "y",
    ]
    assert_user_error(capsys, argv, out, "nope.csv", "does not exist")
    (tmp_path / "garbage.json").write_bytes(b"\x00\xff not json")
    argv[3] = tmp_path / "garbage.json"
    assert_user_error(capsys, argv, out, "garbage.json", "cannot read")


def test_non_numeric_column(tmp_path, capsys):
    pd.DataFrame({"x": ["a", "b", "c", "d"], "y": [1.0, 2.0, 3.0, 4.0]}).to_csv(
        tmp_path / "text.csv", index=False
    )
    out = tmp_path / "fit.json"
    argv = [
        "fit",
        "powerlaw",
        "--input",
        tmp_path / "text.csv",
        "--out",
        out,
        "--x-col",
        "x",
        "--y-col",
        "y",
    ]
    assert_user_error(capsys, argv, out, "text.csv", "'x'", "not numeric")


def test_failed_fit_keeps_an_existing_output(tmp_path, capsys):
    out = tmp_path / "fit.json"
    out.write_text('{"old": true}')
    argv = ["fit", "isoflop", "--input", tmp_path / "missing.csv", "--out", out]
    assert run_cli(*argv) == 2
    assert json.loads(out.read_text()) == {"old": True}


def test_named_flops_or_run_column_must_exist(tmp_path, capsys):
    src = runs_csv(tmp_path / "runs.csv")
    out = tmp_path / "fit.json"
    argv = ["fit", "isoflop", "--input", src, "--out", out, "--d-col", "tokens"]
    assert_user_error(capsys, argv, out, "'tokens'", "--d-col")
    argv = ["fit", "envelope", "--input", src, "--out", out, "--run-col", "series"]
    assert_user_error(capsys, argv, out, "'series'")


def test_non_finite_numbers_are_written_as_null():
    from scalinglab.cli.io import finite_or_none

    cleaned = finite_or_none({"ci": {"a": [float("nan"), 0.5]}, "x": np.float64("inf"), "n": 3})
    assert cleaned == {"ci": {"a": [None, 0.5]}, "x": None, "n": 3}
    json.dumps(cleaned, allow_nan=False)
