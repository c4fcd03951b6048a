"""`scalinglab variants plan|collect|fit|plot`: the architecture-variants phase.

The work is done in `variants` and `plots.variants`, imported inside the handlers: they import
torch, pandas and matplotlib, which `--help` should not wait for.
"""

from __future__ import annotations

from scalinglab import atomic
from scalinglab.cli import grammar
from scalinglab.cli.io import read_csv, read_json, study_config, write_csv, write_json

FIGURES = ("frontier", "envelope", "isoflop")


def _plan(args) -> None:
    from scalinglab.phases import study, variants

    cfg = study_config(args.config)
    table = variants.plan(cfg)
    if table.empty:
        atomic.write_text(args.out, "")
        print("variants: phase disabled")
        return
    if args.meta:
        meta = read_json(args.meta, "token metadata")
        table = study.check_epochs(cfg, table, int(meta["train_tokens"]))
    write_csv(args.out, table)
    trained = study.trained_runs(table)
    for name, rows in trained.groupby("variant", sort=False):
        print(f"variants: {name}: {rows['series_id'].nunique()} sizes, {len(rows)} branches, "
              f"{rows['C_actual'].sum():.3g} FLOPs")
    for row in study.excluded_runs(table).itertuples():
        print(f"  left out {row.run_id}: {row.reason}")


def _collect(args) -> None:
    from scalinglab.phases import variants_analysis as variants

    runs, curves = variants.collect(args.stable, args.branches)
    write_csv(args.runs_out, runs)
    write_csv(args.curves_out, curves)


def _fit(args) -> None:
    from scalinglab.phases import variants_analysis as variants

    result = variants.fit(read_csv(args.runs, "runs table"), n_boot=args.bootstrap,
                          seed=args.seed, reference=args.reference)
    write_json(args.out, result)
    for line in variants.summary_lines(result):
        print(line)


def _plot(args) -> None:
    from scalinglab.plots import variants as variants_plots

    runs, result = read_csv(args.runs, "runs table"), read_json(args.fit, "variants fit")
    draw = {"frontier": variants_plots.frontier_figure,
            "envelope": variants_plots.envelope_figure,
            "isoflop": variants_plots.isoflop_figure}[args.figure]
    draw(runs, result, args.out)


def register(sub) -> None:
    """Add `variants VERB` to the `scalinglab` parser's subparsers."""
    variants = grammar.group(sub, "variants", "the architecture-variants phase")
    p = grammar.verb(variants, "plan", _plan, "the phase's run table, epochs checked")
    grammar.add_config(p, help="resolved study config (JSON) or a YAML config")
    p.add_argument("--meta", help="meta.json of the token files (checks epochs)")
    p.add_argument("--out", required=True, help="CSV of the phase's runs to write")

    p = grammar.verb(variants, "collect", _collect,
                     "runs.csv and curves.csv of the phase's finished runs")
    grammar.add_collected_runs(p)

    p = grammar.verb(variants, "fit", _fit, "Method 1 and 2 laws per variant (active params)")
    p.add_argument("--runs", required=True, help="runs.csv (variants collect)")
    p.add_argument("--out", required=True, help="fit JSON")
    grammar.add_bootstrap(p)
    p.add_argument("--reference", help="the variant the others are compared with "
                   "(default: dense if present, else the first by name)")

    p = grammar.verb(variants, "plot", _plot, "draw one of the phase's figures")
    p.add_argument("figure", choices=FIGURES,
                   help="frontier: loss against compute, each variant's frontier law and its "
                        "residuals; envelope: Method 1; isoflop: Method 2")
    p.add_argument("--runs", required=True, help="runs.csv (variants collect)")
    p.add_argument("--fit", required=True, help="variants.json (variants fit)")
    p.add_argument("--out", required=True, help="PNG to write")
