"""`python -m scalinglab VERB ...`: the one entry point that every workflow rule calls.

Each verb's arguments are declared here; the work is done by the module that owns the concept.
Heavy imports (torch, scipy) happen inside the handlers so that `--help` and config checks are fast.
A `UserError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scalinglab.errors import EXIT_USER_ERROR, UserError


def _check_config(args) -> None:
    from scalinglab import phases
    from scalinglab.config import StudyConfig, from_dict
    from scalinglab.data.corpus import validate_corpus

    cfg = from_dict(StudyConfig, merged_config(args.configs))
    lines = phases.summary(cfg)  # every phase of the registry plans itself
    validate_corpus(cfg.corpus)
    print("\n".join(lines))


def merged_config(paths: list[str]) -> dict:
    """Merge YAML files the way `snakemake --configfile` does: later files override, mappings
    merge key by key, lists are replaced."""
    import yaml

    merged: dict = {}
    for path in paths:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise UserError(f"{path}: config file not found") from None
        except yaml.YAMLError as err:
            raise UserError(f"{path}: not valid YAML ({err})".replace("\n", " ")) from None
        if not isinstance(data, dict):
            raise UserError(f"{path}: a config file must be a mapping of keys")
        _deep_update(merged, data)
    return merged


def _deep_update(base: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value


def _prepare_corpus(args) -> None:
    from scalinglab.config import StudyConfig, from_dict
    from scalinglab.data.corpus import prepare_corpus, validate_corpus

    cfg = from_dict(StudyConfig, _read_json(args.config))
    validate_corpus(cfg.corpus)
    prepare_corpus(cfg.corpus, cfg.seed, Path(args.out_dir))


def _train_tokenizer(args) -> None:
    from scalinglab.data.tokenizer import train_tokenizer

    train_tokenizer(Path(args.corpus_dir) / "train.jsonl", args.vocab_size, Path(args.out))


def _encode_corpus(args) -> None:
    from scalinglab.data.tokenizer import encode_corpus

    encode_corpus(Path(args.tokenizer), Path(args.corpus_dir), Path(args.out_dir))


def _plan_study(args) -> None:
    from scalinglab import atomic
    from scalinglab.config import StudyConfig, from_dict
    from scalinglab.phases.study import check_epochs, plan_isoflop

    cfg = from_dict(StudyConfig, _read_json(args.config))
    meta = _read_json(args.meta)
    table = check_epochs(cfg, plan_isoflop(cfg), int(meta["train_tokens"]))
    from scalinglab.training.downstream import check_split

    check_split(cfg.downstream, int(meta["val_tokens"]))  # before any branch trains
    atomic.write_text(args.out, table.to_csv(index=False))


def _data_parallel(args) -> bool:
    """With `--processes K > 1` outside torchrun, re-run this verb as K torchrun workers (and
    never return); inside torchrun, or for one process, train here."""
    from scalinglab.training import distributed

    if args.processes < 1:
        raise UserError(f"--processes must be >= 1, got {args.processes}")
    if args.processes == 1 or distributed.env_world_size() > 1:
        return False
    from scalinglab.training.spec import read_spec

    batch_size = int(read_spec(args.spec).training["batch_size"])
    distributed.relaunch(args.processes, args.argv, batch_size)
    return True


def _train_stable(args) -> None:
    from scalinglab.training.jobs import train_stable

    if _data_parallel(args):
        return
    train_stable(args.spec, args.data_dir, args.out_dir, threads=args.threads)


def _decay_branch(args) -> None:
    from scalinglab.training.jobs import decay_branch

    if _data_parallel(args):
        return
    decay_branch(args.spec, args.label, args.checkpoint, args.data_dir, args.out_dir,
                 threads=args.threads)


def _collect_metrics(args) -> None:
    from scalinglab import atomic
    from scalinglab.training.metrics import collect

    runs, curves = collect(args.stable, args.branches)
    atomic.write_text(args.runs_out, runs.to_csv(index=False))
    atomic.write_text(args.curves_out, curves.to_csv(index=False))


def _plot(args) -> None:
    from scalinglab.plots import study as plots

    plots.draw(args.figure, args)


def _bench(args) -> None:
    if args.what == "fit":
        from scalinglab.fitting import bench as bench_fit

        return bench_fit.main([])
    from scalinglab.training import bench

    bench.run(args)


def _write_spec(args) -> None:
    from scalinglab.atomic import write_text

    try:
        json.loads(args.spec)
    except json.JSONDecodeError as err:
        raise UserError(f"write-spec: the spec is not valid JSON ({err})") from None
    write_text(args.out, f"{args.spec}\n")


def _config_reference(args) -> None:
    import yaml

    from scalinglab.config.reference import markdown_table

    try:
        schema = yaml.safe_load(Path(args.schema).read_text())
    except FileNotFoundError:
        raise UserError(f"{args.schema}: schema file not found") from None
    print(markdown_table(schema))


def _read_json(path: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scalinglab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = sub.add_parser("check-config", help="validate study config(s) and print the plan")
    p.add_argument("configs", nargs="+", help="YAML files, merged in order like --configfile")
    p.set_defaults(func=_check_config)

    # a shell job, not a `run:` block: Snakemake runs each `run:` job in a fresh Snakemake process
    p = sub.add_parser("write-spec", help="write one resolved spec (JSON) atomically")
    p.add_argument("--out", required=True)
    p.add_argument("spec", help="the spec as one JSON string")
    p.set_defaults(func=_write_spec)

    p = sub.add_parser("config-reference", help="print the README's table of config keys")
    p.add_argument("--schema", default="workflow/schemas/config.schema.yaml")
    p.set_defaults(func=_config_reference)

    p = sub.add_parser("prepare-corpus", help="collect documents, split train/val by document")
    p.add_argument("--config", required=True, help="resolved study config (JSON)")
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=_prepare_corpus)

    p = sub.add_parser("train-tokenizer", help="train a byte-level BPE on the training split")
    p.add_argument("--corpus-dir", required=True)
    p.add_argument("--vocab-size", type=int, required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_train_tokenizer)

    p = sub.add_parser("encode-corpus", help="encode both splits into flat token files")
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--corpus-dir", required=True)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=_encode_corpus)

    p = sub.add_parser("plan-study", help="expand the study table and check epochs")
    p.add_argument("--config", required=True, help="resolved study config (JSON)")
    p.add_argument("--meta", required=True, help="meta.json of the token files")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_plan_study)

    for verb, func, helptext in (
        ("train-stable", _train_stable, "warmup + stable phase of one series, with branch points"),
        ("decay-branch", _decay_branch, "decay one branch from its stable checkpoint"),
    ):
        p = sub.add_parser(verb, help=helptext)
        p.add_argument("--spec", required=True, help="series spec (JSON)")
        p.add_argument("--data-dir", required=True,
                       help="folder with train.bin, val.bin and meta.json")
        p.add_argument("--out-dir", required=True)
        p.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
        p.add_argument("--processes", type=int, default=1,
                       help="data-parallel processes: more than 1 starts them with torchrun")
        if verb == "decay-branch":
            p.add_argument("--label", required=True)
            p.add_argument("--checkpoint", required=True)
        p.set_defaults(func=func)

    p = sub.add_parser("collect-metrics", help="runs.csv and curves.csv from finished runs")
    p.add_argument("--stable", nargs="*", default=[], help="run.json of each stable run")
    p.add_argument("--branches", nargs="+", required=True, help="run.json of each branch")
    p.add_argument("--runs-out", required=True)
    p.add_argument("--curves-out", required=True)
    p.set_defaults(func=_collect_metrics)

    p = sub.add_parser("plot", help="draw one of the study's figures")
    p.add_argument("figure", choices=("loss-curves", "isoflop", "compute-optimal"))
    p.add_argument("--runs", help="runs.csv")
    p.add_argument("--curves", help="curves.csv")
    p.add_argument("--fit", help="isoflop.json")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_plot)

    p = sub.add_parser("bench", help="benchmarks that print figures")
    p.add_argument("what", choices=("train", "fit"),
                   help="train: project step vs bare loop; fit: Method 3 bootstrap timing")
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--block-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--steps", type=int, default=2,
                   help="timed steps per loop and round (short turns pair the noise)")
    p.add_argument("--rounds", "--repeats", type=int, default=30,
                   help="interleaved rounds, each timing both loops (>= 6 for a 95%% interval)")
    p.add_argument("--live-rounds", type=int, default=40,
                   help="rounds of the live writing on/off comparison (0: leave it out)")
    p.add_argument("--live-steps", type=int, default=2,
                   help="steps per loop and round in the live comparison")
    p.add_argument("--live-eval-every", type=int, default=2,
                   help="an evaluation every this many steps in the live comparison (the "
                        "study's default is 50: 2 magnifies live writing's cost 25 times)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (0: all cores); 1, as a study's training job has")
    p.add_argument("--compile", action="store_true", help="torch.compile both loops")
    p.set_defaults(func=_bench)

    from scalinglab.cli import fit as fit_cli
    from scalinglab.cli import mup as mup_cli
    from scalinglab.cli import variants as variants_cli

    fit_cli.register(sub)
    mup_cli.register(sub)
    variants_cli.register(sub)
    from scalinglab.cli import downstream as downstream_cli
    from scalinglab.cli import hparams as hparams_cli

    hparams_cli.register(sub)
    downstream_cli.register(sub)
    from scalinglab.cli import schedule_law as schedule_law_cli

    schedule_law_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for a data-parallel relaunch
    try:
        result = args.func(args)
    except UserError as err:
        print(f"scalinglab {args.verb}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
