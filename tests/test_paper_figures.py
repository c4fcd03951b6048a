"""Paper figures: vendored data intact, published-laws table consistent, every figure drawn,
and the Snakemake rules plan one job per figure."""

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scalinglab.cli.main import main
from scalinglab.fitting.envelope import fit_envelope
from scalinglab.fitting.isoflop import fit_isoflop
from scalinglab.fitting.powerlaw import loglog_fit
from scalinglab.plots import paper as paper_figures

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_vendored_data_match_their_readme_checksums():
    folder = REPO / "src" / "scalinglab" / "data" / "paper"
    readme = (folder / "README.md").read_text()
    for name in ("cs336_isoflops_curves.json", "porian_optimal_pairs.csv", "porian_fits.csv"):
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        assert digest in readme, name
    for notice in ("LICENSE-cs336.txt", "LICENSE-porian.txt"):
        text = (folder / notice).read_text()
        assert "MIT License" in text and "Permission is hereby granted" in text


def test_vendored_cs336_reproduces_reference_answers():
    C, N, loss = paper_figures.load_cs336()
    assert len(C) == 72 and len(np.unique(C)) == 9
    assert fit_isoflop(C, N, loss).a == pytest.approx(0.5146, abs=5e-4)
    assert fit_envelope(np.arange(72), C, N, loss).a == pytest.approx(0.4687, abs=5e-4)


def test_vendored_porian_steps():
    pairs, fits = paper_figures.load_porian()
    published = [rows["a_n_exponent"].iloc[0] for rows in paper_figures.porian_steps(fits)]
    np.testing.assert_allclose(published, [0.835, 0.706, 0.602, 0.571, 0.497], atol=6e-4)
    for rows, fit in zip(
        paper_figures.porian_steps(pairs), paper_figures.porian_steps(fits), strict=True
    ):
        _, a = loglog_fit(rows["flops"], rows["n"])
        assert a == pytest.approx(fit["a_basic_unweighted"].iloc[0], abs=1e-3)


# ---------------------------------------------------------------- the published-laws table


@pytest.fixture(scope="module")
def table():
    return paper_figures.load_published_laws()


def test_every_law_is_cited_and_numeric(table):
    ids = [law["id"] for law in table["compute_optimal"] + table["hyperparameters"]]
    assert len(ids) == len(set(ids))
    for law in table["compute_optimal"] + table["hyperparameters"]:
        assert re.search(r"arXiv \d{4}\.\d{5}", law["citation"]), law["id"]
        assert law["checked"] in {"reference-data", "not-offline"}
    for law in table["hyperparameters"]:
        assert isinstance(law["coef"], float) and isinstance(law["exponent"], float), law["id"]
    for law in table["compute_optimal"]:
        values = paper_figures.tokens_per_param(law, np.geomspace(1e18, 1e26, 9))
        assert np.all(np.isfinite(values) & (values > 0)), law["id"]


def test_the_table_holds_what_the_issue_lists(table):
    ids = {law["id"] for law in table["compute_optimal"]}
    assert ids >= {
        "kaplan2020",
        "chinchilla_approach1",
        "chinchilla_approach2",
        "chinchilla_approach3",
        "epoch2024",
        "deepseek2024",
        "llama3_2024",
        "minicpm2024",
    }
    hp = {law["id"] for law in table["hyperparameters"]}
    assert hp >= {"deepseek_lr", "deepseek_batch", "minicpm_batch"}


def test_tokens_per_parameter_of_known_laws(table):
    law = {entry["id"]: entry for entry in table["compute_optimal"]}
    tpp = paper_figures.tokens_per_param
    # Chinchilla Approach 1 projects 1B parameters on 20.2B tokens (Table 3)
    assert tpp(law["chinchilla_approach1"], 6 * 1e9 * 20.2e9) == pytest.approx(20.2, rel=0.03)
    assert tpp(law["chinchilla_approach2"], 6 * 1e10 * 219.5e9) == pytest.approx(21.95, rel=0.05)
    assert tpp(law["minicpm2024"], 1e22) == 192
    # Llama 3: the 0.53 slope through 16.55T tokens at 3.8e25 FLOPs, N = C/(6D) there
    assert tpp(law["llama3_2024"], 3.8e25) == pytest.approx(6 * 16.55e12**2 / 3.8e25, rel=1e-9)
    assert tpp(law["llama3_2024"], 3.8e25) == pytest.approx(16.55e12 / 4.02e11, rel=0.06)
    # Approach 3 and Epoch: D/N grows as C^(b - a) with a = beta/(alpha + beta)
    for key, a in (
        ("chinchilla_approach3", 0.2849083 / 0.62407914),
        ("epoch2024", 0.3659 / 0.7137),
    ):
        ratio = tpp(law[key], 1e24) / tpp(law[key], 1e20)
        assert np.log(ratio) / np.log(1e4) == pytest.approx(1 - 2 * a, abs=1e-9)
    # Kaplan: N_opt = 1.3e9 at one PF-day, so D/N = C / (6 N^2)
    assert tpp(law["kaplan2020"], 8.64e19) == pytest.approx(8.64e19 / (6 * 1.3e9**2))
    # DeepSeek: 6 D/M with M = 0.1715 C^0.5243, D = 5.8316 C^0.4757
    c = 1e22
    assert tpp(law["deepseek2024"], c) == pytest.approx(
        6 * 5.8316 * c**0.4757 / (0.1715 * c**0.5243)
    )


# ---------------------------------------------------------------- drawing


def assert_png(path):
    data = Path(path).read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 20_000


@pytest.mark.parametrize("name", ["cs336_isoflops", "porian_exponents", "published_hparams"])
def test_figures_are_drawn(tmp_path, name):
    out = tmp_path / "paper" / f"{name}.png"
    assert main(["paper-figure", name, "--out", str(out)]) == 0
    assert_png(out)


def test_published_laws_with_and_without_the_study_fit(tmp_path):
    fit = {
        "method": "isoflop",
        "a": 0.5,
        "k_n": 0.1,
        "b": 0.5,
        "k_d": 1.6,
        "budgets": [
            {"C": c, "N_opt": 0.1 * c**0.5, "D_opt": 1.6 * c**0.5} for c in (1e17, 1e18, 1e19)
        ],
    }
    (tmp_path / "fit.json").write_text(json.dumps(fit))
    out = tmp_path / "with.png"
    argv = ["paper-figure", "published_laws", "--out", str(out), "--study-fit"]
    assert main([*argv, str(tmp_path / "fit.json")]) == 0
    assert_png(out)
    assert main(["paper-figure", "published_laws", "--out", str(tmp_path / "without.png")]) == 0
    assert_png(tmp_path / "without.png")


def test_bad_study_fit_is_a_user_error(tmp_path, capsys):
    out = tmp_path / "fig.png"
    assert (
        main(
            [
                "paper-figure",
                "published_laws",
                "--out",
                str(out),
                "--study-fit",
                str(tmp_path / "none.json"),
            ]
        )
        == 2
    )
    assert "none.json" in capsys.readouterr().err and not out.exists()
    (tmp_path / "partial.json").write_text('{"a": 0.5}')
    assert (
        main(
            [
                "paper-figure",
                "published_laws",
                "--out",
                str(out),
                "--study-fit",
                str(tmp_path / "partial.json"),
            ]
        )
        == 2
    )
    assert "k_n" in capsys.readouterr().err and not out.exists()


def test_epoch_refit_without_data_says_where_to_put_it(tmp_path, capsys):
    out = tmp_path / "epoch.png"
    assert main(["paper-figure", "epoch_refit", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--data" in err and "paper.epoch_csv" in err and not out.exists()
    assert (
        main(
            [
                "paper-figure",
                "epoch_refit",
                "--out",
                str(out),
                "--data",
                str(tmp_path / "absent.csv"),
            ]
        )
        == 2
    )
    assert "absent.csv" in capsys.readouterr().err and not out.exists()


# ---------------------------------------------------------------- the Snakemake rules


def dry_run(tmp_path, config: str) -> str:
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(
        f"{config}\n"
        f'include: "{REPO / "workflow" / "rules" / "paper.smk"}"\n\n'
        "rule all:\n    input:\n        PAPER_FIGURES,\n"
    )
    (tmp_path / "results" / "fits").mkdir(parents=True)
    (tmp_path / "results" / "fits" / "isoflop.json").write_text("{}")
    snakemake = shutil.which("snakemake", path=str(Path(sys.executable).parent))
    done = subprocess.run(
        [snakemake, "-n", "--quiet", "rules", "-s", str(snakefile), "-d", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout + done.stderr


def jobs_per_rule(text: str) -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(r"^(paper_\w+)\s+(\d+)$", text, re.M)}


def test_rules_plan_one_job_per_figure(tmp_path):
    plan = jobs_per_rule(dry_run(tmp_path, ""))
    assert plan == {
        "paper_cs336_isoflops": 1,
        "paper_porian_exponents": 1,
        "paper_published_laws": 1,
        "paper_published_hparams": 1,
    }


def test_epoch_rule_only_with_the_config_key(tmp_path):
    csv = tmp_path / "epoch.csv"
    csv.write_text("x\n")
    plan = jobs_per_rule(dry_run(tmp_path, f'config["paper"] = {{"epoch_csv": "{csv}"}}'))
    assert plan.get("paper_epoch_refit") == 1 and len(plan) == 5
