"""Benchmark: Method 3 with 1,000 bootstrap refits on Epoch's 240 Chinchilla points.

The issue's target is <= 30 s on 2 cores. Epoch's CSV may not be shipped with the package, so it
is read from `--data`, else `$SCALINGLAB_REFERENCE_DATA/epoch-chinchilla/svg_extracted_data.csv`,
else `../shared/reference-data/...` next to the repository. Prints wall and CPU times and the
serial/parallel ratio; asserts nothing (timings depend on the machine and its load).
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

from scalinglab.errors import UserError

EPOCH_FILE = Path("epoch-chinchilla") / "svg_extracted_data.csv"


def reference_data_dir() -> Path:
    """$SCALINGLAB_REFERENCE_DATA, else `shared/reference-data` beside the repository root."""
    env = os.environ.get("SCALINGLAB_REFERENCE_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3].parent / "shared" / "reference-data"


def load_epoch(path: str | os.PathLike | None = None, n_excluded: int = 5):
    """(N, D, loss) of Epoch's points less the `n_excluded` highest losses, D = C/(6N).

    Epoch keep `loss < sorted(loss)[-5]` (analyzing-chinchilla, data_analysis.ipynb), so 240 of
    the 245 points remain.
    """
    import numpy as np
    import pandas as pd

    path = Path(path) if path else reference_data_dir() / EPOCH_FILE
    if not path.is_file():
        raise UserError(
            f"Epoch's Chinchilla CSV not found at {path} (not shipped: no licence). Pass --data "
            "or set SCALINGLAB_REFERENCE_DATA to the folder holding epoch-chinchilla/"
        )
    df = pd.read_csv(path)
    missing = {"Model Size", "Training FLOP", "loss"} - set(df.columns)
    if missing:
        raise UserError(f"{path}: missing column(s) {sorted(missing)}")
    if n_excluded:
        df = df[df["loss"] < np.sort(df["loss"].to_numpy())[-n_excluded]]
    N = df["Model Size"].to_numpy(float)
    return N, df["Training FLOP"].to_numpy(float) / (6.0 * N), df["loss"].to_numpy(float)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="Epoch's svg_extracted_data.csv (default: reference data)")
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples (default 1000)")
    p.add_argument("--workers", type=int, help="processes (default: one per core)")
    p.add_argument("--serial", action="store_true", help="also time one process, for the ratio")


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed(fn):
    wall, cpu = time.perf_counter(), _cpu_seconds()
    out = fn()
    return out, time.perf_counter() - wall, _cpu_seconds() - cpu


def run(args) -> int:
    from scalinglab.fitting.bootstrap import default_workers
    from scalinglab.fitting.parametric import bootstrap_parametric, fit_parametric

    N, D, loss = load_epoch(args.data)
    workers = args.workers or default_workers(args.bootstrap)
    print(f"points: {len(N)}; cores: {os.cpu_count()}; load average: {os.getloadavg()[0]:.2f}")
    fit, wall, cpu = _timed(lambda: fit_parametric(N, D, loss))
    print(f"full fit (64 grid starts): {wall:.2f} s wall, {cpu:.2f} s CPU")
    print(f"  E={fit.E:.4f} A={fit.A:.1f} B={fit.B:.1f} alpha={fit.alpha:.4f} beta={fit.beta:.4f}")

    def boot(w):
        return bootstrap_parametric(N, D, loss, fit, n_boot=args.bootstrap, workers=w)

    result, wall, cpu = _timed(lambda: boot(workers))
    lo, hi = result.interval("alpha")
    print(
        f"bootstrap x{args.bootstrap}, {workers} process(es): {wall:.2f} s wall, {cpu:.2f} s CPU, "
        f"{1000 * wall / args.bootstrap:.2f} ms/refit; alpha 95% CI [{lo:.4f}, {hi:.4f}]"
    )
    print(f"target: <= 30 s wall for 1000 refits on 2 cores -> {'met' if wall <= 30 else 'MISSED'}")
    if args.serial and workers > 1:
        _, serial, _ = _timed(lambda: boot(1))
        print(f"one process: {serial:.2f} s wall; speed-up x{serial / wall:.2f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m scalinglab bench fit`: parse `argv` and run."""
    parser = argparse.ArgumentParser(prog="scalinglab bench fit", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UserError as err:
        print(f"scalinglab bench fit: error: {err}")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
