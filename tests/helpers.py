"""Small builders shared by the tests: a token folder, a series spec for a tiny model, and a
Snakemake run of the workflow in a folder of its own."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def snakemake(workdir: Path, *args: str, timeout: int = 900,
              env: dict | None = None) -> subprocess.CompletedProcess:
    """The project's Snakefile run in `workdir`, its jobs on this interpreter's PATH, with `env`
    added to the environment."""
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               **(env or {}))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def job_counts(output: str) -> dict[str, int]:
    """Jobs per rule from the "Job stats" table of a (dry) run's output."""
    table = output.split("Job stats:")[1]
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"^(\w+)\s+(\d+)$", table, flags=re.MULTILINE)}


def write_token_dir(folder: Path, vocab: int = 64, n_train: int = 40_000, n_val: int = 4_000,
                    seed: int = 0) -> Path:
    """Token files with some structure (a noisy repeating pattern) so that the loss can fall."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("val", n_val)):
        pattern = np.arange(n) % 17 * 3 % vocab
        noise = rng.integers(0, vocab, size=n)
        tokens = np.where(rng.random(n) < 0.3, noise, pattern).astype(np.uint16)
        tokens.tofile(folder / f"{split}.bin")
    meta = {"vocab_size": vocab, "dtype": "uint16", "train_tokens": n_train, "val_tokens": n_val}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def tiny_spec(*, stable_steps: int = 24, branches=((16, 20, "C1"), (24, 30, "C2")),
              vocab: int = 64, shape: str = "linear", kind: str = "wsd") -> dict:
    """A series spec for a 1-layer, 16-wide model; branches are (decay_start, total, label)."""
    return {
        "series_id": "test-series",
        "phase": "isoflop",
        "seed": 0,
        "model": {"vocab_size": vocab, "block_size": 16, "n_layer": 1, "n_embd": 16,
                  "n_head": 2, "mlp_ratio": 4, "emb_scale": 1.0, "logit_scale": 1.0,
                  "attn_scale": 0.25 ** 0.5 * 0.5, "residual_scale": 1.0},
        "parametrization": {"name": "sp"},
        "training": {"batch_size": 4, "lr": 1e-2, "weight_decay": 0.1, "beta1": 0.9,
                     "beta2": 0.95, "grad_clip": 1.0, "warmup_tokens": 64, "eval_every": 4,
                     "eval_tokens": 256, "checkpoint_every": 5, "device": "cpu"},
        "schedule": {"kind": kind, "decay_fraction": 0.2, "decay_shape": shape,
                     "final_lr_ratio": 0.0},
        "schedule_name": "test",
        "flops_convention": "6N+attn+head",
        "N": 3000, "N_total": 5000, "flops_per_token": 20000.0,
        "warmup_steps": 4,
        "stable_steps": stable_steps,
        "branches": [
            {"label": label, "run_id": f"test-series_{label}", "C": 1.0, "D": total * 64,
             "total_steps": total, "decay_start": start, "trained": True}
            for start, total, label in branches
        ],
    }


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(json.dumps(spec))
    return path


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Import it into a test module to run that module's tests on one torch thread."""
    # tiny matmuls gain nothing from a second thread, and lose a lot when the cores are busy
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sweep_fit(verb: str, folder: Path, runs) -> tuple[dict, int, bytes]:
    """`scalinglab VERB fit` (a transfer sweep) on a run.json per row of `runs` (the table of
    `lr_sweep.read_runs`), each as a finished decay branch writes it. Returns the fit, the rows
    of the runs CSV and the figure's first 8 bytes."""
    import pandas as pd

    from scalinglab.cli import main as cli

    paths = []
    for i, row in enumerate(runs.itertuples()):
        run = folder / f"r{i}"
        run.mkdir()
        record = {"run_id": row.run_id, "D": row.D, "final_val_loss": row.loss,
                  "wall_seconds": 1.0,
                  "spec": {"seed": row.seed, "parametrization": {"name": row.parametrization},
                           "training": {"lr": row.lr},
                           "model": {"n_embd": row.width, "n_layer": row.n_layer,
                                     "vocab_size": 1024}}}
        (run / "run.json").write_text(json.dumps(record))
        paths.append(str(run / "run.json"))
    out, table, png = folder / "fit.json", folder / "runs.csv", folder / "figure.png"
    assert cli.main([verb, "fit", "--runs", *paths, "--out", str(out), "--runs-out",
                     str(table), "--figure", str(png)]) == 0
    return json.loads(out.read_text()), len(pd.read_csv(table)), png.read_bytes()[:8]


def sweep_dry_run(workdir: Path, target: str, configfile: str) -> tuple[dict, object]:
    """The jobs per rule of a dry run for `target` over config.yaml + `configfile`, and the
    study config they plan from."""
    from scalinglab.cli import main as cli
    from scalinglab.config import StudyConfig, from_dict

    result = snakemake(workdir, target, "-n", "--cores", "2", "--quiet", "rules",
                       "--configfile", configfile)
    assert result.returncode == 0, result.stderr + result.stdout
    cfg = from_dict(StudyConfig, cli.merged_config([str(REPO / "config.yaml"), configfile]))
    return job_counts(result.stdout + result.stderr), cfg


def sweep_end_to_end(workdir: Path, phase: str, section: str) -> dict:
    """A transfer sweep trained and fitted by the workflow over tests/smoke.yaml plus the YAML
    `section`: checks the run and the figure, returns `results/fits/<phase>.json`."""
    tiny = workdir / "tiny.yaml"
    tiny.write_text(section)
    figure, fit = f"results/figures/{phase}.png", f"results/fits/{phase}.json"
    result = snakemake(workdir, figure, fit, "--cores", "2", "--configfile",
                       str(REPO / "tests" / "smoke.yaml"), str(tiny))
    assert result.returncode == 0, result.stderr[-4000:]
    assert (workdir / figure).stat().st_size > 10_000
    return json.loads((workdir / fit).read_text())


def synthetic_sweep(slopes: dict, values, *, axis: str, eta0: float, seeds=(0,),
                    noise: float = 0.0, seed: int = 0, fixed: dict | None = None):
    """A transfer sweep's runs table whose loss is a parabola in log2 lr around
    eta*(v) = eta0 (v / values[0])^slope at each value v of `axis` ("width" or "n_layer"), on
    the LR grid 1e-3 ... 6.4e-2; `fixed` gives the other shape column."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    for p, s in slopes.items():
        for v in values:
            eta = eta0 * (v / values[0]) ** s
            for lr in 1e-3 * 2.0 ** np.arange(7):
                for seed_ in seeds:
                    loss = 4.0 - 0.1 * np.log2(v) + 0.05 * (np.log2(lr / eta)) ** 2
                    rows.append({"run_id": f"{p}-{v}-{lr}-{seed_}", "parametrization": p,
                                 **(fixed or {}), axis: v, "lr": lr, "seed": seed_,
                                 "D": 65536, "loss": loss + noise * rng.normal(),
                                 "diverged": False, "wall_seconds": 1.0})
    return pd.DataFrame(rows)
