"""`scalinglab variants-plan | variants-collect | variants-fit | variants-plot | bench-attention`.

`cli.py` calls `register(sub)`; the work is done in `variants`, `variants_plots` and
`linear_attention`, imported inside the handlers so that `--help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

from scalinglab.errors import UserError


def _read_json(path: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None


def _read_csv(path: str):
    import pandas as pd

    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: empty file") from None


def _study_config(path: str):
    """A study config from a resolved JSON spec or a YAML file (merged over nothing)."""
    from scalinglab.config import StudyConfig, from_dict, load_config

    if path.endswith((".yaml", ".yml")):
        return load_config(path)
    return from_dict(StudyConfig, _read_json(path))


def _plan(args) -> None:
    from scalinglab import atomic
    from scalinglab.phases import study, variants

    cfg = _study_config(args.config)
    table = variants.plan(cfg)
    if table.empty:
        atomic.write_text(args.out, "")
        print("variants: phase disabled")
        return
    if args.meta:
        table = study.check_epochs(cfg, table, int(_read_json(args.meta)["train_tokens"]))
    atomic.write_text(args.out, table.to_csv(index=False))
    trained = study.trained_runs(table)
    for name, rows in trained.groupby("variant", sort=False):
        print(f"variants: {name}: {rows['series_id'].nunique()} sizes, {len(rows)} branches, "
              f"{rows['C_actual'].sum():.3g} FLOPs")
    for row in study.excluded_runs(table).itertuples():
        print(f"  left out {row.run_id}: {row.reason}")


def _collect(args) -> None:
    from scalinglab import atomic
    from scalinglab.phases import variants_analysis as variants

    runs, curves = variants.collect(args.stable, args.branches)
    atomic.write_text(args.runs_out, runs.to_csv(index=False))
    atomic.write_text(args.curves_out, curves.to_csv(index=False))


def _fit(args) -> None:
    from scalinglab import atomic
    from scalinglab.phases import variants_analysis as variants

    result = variants.fit(_read_csv(args.runs), n_boot=args.bootstrap, seed=args.seed,
                          reference=args.reference)
    atomic.write_json(args.out, variants.finite_or_none(result))
    for line in variants.summary_lines(result):
        print(line)


def _plot(args) -> None:
    from scalinglab.plots import variants as variants_plots

    runs, result = _read_csv(args.runs), _read_json(args.fit)
    draw = {"frontier": variants_plots.frontier_figure,
            "envelope": variants_plots.envelope_figure,
            "isoflop": variants_plots.isoflop_figure}[args.figure]
    draw(runs, result, args.out)


def _bench_attention(args) -> None:
    import torch

    from scalinglab.model.attention_bench import benchmark

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    rows = benchmark(args.seq_lens, n_embd=args.n_embd, n_head=args.n_head,
                     batch_size=args.batch_size, repeats=args.repeats,
                     backward=not args.forward_only, chunk_size=args.chunk_size,
                     device=args.device)
    what = "forward" if args.forward_only else "forward+backward"
    print(f"one attention block, {what}, n_embd={args.n_embd}, n_head={args.n_head}, "
          f"batch={args.batch_size}, chunk={args.chunk_size}, device={args.device}, "
          f"threads={torch.get_num_threads()}, best of {args.repeats}")
    print(f"{'seq_len':>8} {'softmax tok/s':>14} {'linear tok/s':>13} {'linear/softmax':>15}")
    for r in rows:
        print(f"{r['seq_len']:>8} {r['softmax_tokens_per_s']:>14,.0f} "
              f"{r['linear_tokens_per_s']:>13,.0f} {r['linear_over_softmax']:>15.2f}")


def register(sub) -> None:
    """Add the variants verbs to the `scalinglab` argument parser's subparsers."""
    p = sub.add_parser("variants-plan", help="the architecture-variants phase's run table")
    p.add_argument("--config", required=True, help="resolved study config (JSON) or YAML")
    p.add_argument("--meta", help="meta.json of the token files (checks epochs)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_plan)

    p = sub.add_parser("variants-collect", help="runs.csv and curves.csv of the variants phase")
    p.add_argument("--stable", nargs="*", default=[], help="run.json of each stable run")
    p.add_argument("--branches", nargs="+", required=True, help="run.json of each branch")
    p.add_argument("--runs-out", required=True)
    p.add_argument("--curves-out", required=True)
    p.set_defaults(func=_collect)

    p = sub.add_parser("variants-fit", help="Method 1 and 2 laws per variant (active params)")
    p.add_argument("--runs", required=True, help="runs.csv from variants-collect")
    p.add_argument("--out", required=True, help="fit JSON")
    p.add_argument("--bootstrap", type=int, default=1000, help="replicates for the intervals")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reference", help="the variant the others are compared with "
                   "(default: dense if present, else the first by name)")
    p.set_defaults(func=_fit)

    p = sub.add_parser("variants-plot", help="draw a variants figure")
    p.add_argument("figure", choices=("frontier", "envelope", "isoflop"),
                   help="frontier: loss against compute, each variant's frontier law and its "
                        "residuals; envelope: Method 1; isoflop: Method 2")
    p.add_argument("--runs", required=True, help="runs.csv from variants-collect")
    p.add_argument("--fit", required=True, help="variants.json")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_plot)

    p = sub.add_parser("bench-attention",
                       help="tokens/s of linear attention against softmax SDPA by length")
    p.add_argument("--seq-lens", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--chunk-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--forward-only", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.set_defaults(func=_bench_attention)
