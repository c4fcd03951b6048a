"""`python -m scalinglab VERB ...` or `python -m scalinglab GROUP VERB ...`: the one command line
that every workflow rule calls, and that works the same by hand, in pytest and under SLURM.

The grammar (`cli.grammar`): `check-config`, `write-spec`, `config-reference`; `data
prepare|tokenizer|encode` and `train stable|branch`, the spine; `fit METHOD`, the law library on
any CSV; a group per phase (`isoflop plan|collect|plot`, `hparams plan|fit`, ...); `bench
train|fit|attention`; `paper-figure NAME`. Each group's module declares its verbs; the work is
done by the package module that owns the concept. A `UserError` becomes one line on stderr and
exit code 2.

The phase registry is imported inside `check-config`'s handler: it imports torch and pandas
(seconds), which `--help` and a mistyped option should not wait for.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from scalinglab.atomic import write_text
from scalinglab.cli import grammar
from scalinglab.cli.io import merged_config
from scalinglab.config import StudyConfig, from_dict
from scalinglab.config.reference import markdown_table
from scalinglab.data.corpus import validate_corpus
from scalinglab.errors import EXIT_USER_ERROR, UserError

__all__ = ["build_parser", "main", "merged_config"]


def _check_config(args) -> None:
    from scalinglab import phases

    cfg = from_dict(StudyConfig, merged_config(args.configs))
    lines = phases.summary(cfg)  # every phase of the registry plans itself
    validate_corpus(cfg.corpus)
    print("\n".join(lines))


def _write_spec(args) -> None:
    try:
        json.loads(args.spec)
    except json.JSONDecodeError as err:
        raise UserError(f"the spec is not valid JSON ({err})") from None
    write_text(args.out, f"{args.spec}\n")


def _config_reference(args) -> None:
    try:
        schema = yaml.safe_load(Path(args.schema).read_text())
    except FileNotFoundError:
        raise UserError(f"{args.schema}: schema file not found") from None
    print(markdown_table(schema))


def _add_study_verbs(sub) -> None:
    p = grammar.verb(sub, "check-config", _check_config,
                     "validate study config(s) and print every phase's plan")
    p.add_argument("configs", nargs="+", help="YAML files, merged in order like --configfile")

    # a shell job, not a `run:` block: Snakemake runs each `run:` job in a fresh Snakemake process
    p = grammar.verb(sub, "write-spec", _write_spec, "write one resolved spec (JSON) atomically")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("spec", help="the spec as one JSON string")

    p = grammar.verb(sub, "config-reference", _config_reference,
                     "print the README's table of config keys")
    p.add_argument("--schema", default="workflow/schemas/config.schema.yaml",
                   help="the config's JSON schema (YAML) (default %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    from scalinglab.cli import (
        bench,
        data,
        downstream,
        fit,
        hparams,
        isoflop,
        mup,
        recipe,
        schedule_law,
        train,
        variants,
    )
    from scalinglab.plots.paper import register as register_paper

    parser = argparse.ArgumentParser(prog="scalinglab", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB",
                                help="a verb, or a group and its verb (VERB --help for more)")
    _add_study_verbs(sub)
    for module in (data, train, fit, isoflop, schedule_law, mup, hparams, variants, downstream,
                   recipe, bench):
        module.register(sub)
    register_paper(sub)
    for path, leaf in grammar.verbs(parser).items():
        leaf.set_defaults(command=" ".join(path))  # for the error line
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for a data-parallel relaunch
    try:
        result = args.func(args)
    except UserError as err:
        print(f"scalinglab {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
