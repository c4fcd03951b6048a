"""The grammar of `scalinglab`: how a verb is declared, the options several verbs share, and
the walk over the parser tree that `main` and the tests use.

A command is `scalinglab VERB` or `scalinglab GROUP VERB`, then options: a group per phase of
the study (`isoflop plan`, `hparams fit`), per stage of the spine (`data encode`, `train
branch`), for the law library on any CSV (`fit isoflop`) and for the benchmarks (`bench fit`).
Every verb path has its own handler and every argument has help text (tests/test_cli.py).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def group(sub, name: str, help: str, description: str | None = None, metavar: str = "VERB"):
    """`scalinglab NAME VERB ...`: a parser whose verbs are added to the returned action."""
    parser = sub.add_parser(name, help=help, description=description or help)
    return parser.add_subparsers(dest=f"{name}_verb", required=True, metavar=metavar,
                                 help=f"what to do ({name} {metavar} --help for its options)")


def verb(sub, name: str, func: Callable, help: str,
         description: str | None = None) -> argparse.ArgumentParser:
    """A verb whose handler is `func(args)`; returns its parser for the options."""
    parser = sub.add_parser(name, help=help, description=description or help)
    parser.set_defaults(func=func)
    return parser


def add_config(p, *, required: bool = True, help: str | None = None) -> None:
    p.add_argument("--config", required=required,
                   help=help or "the study config resolved by the workflow "
                   "(results/specs/study.json)")


def add_bootstrap(p, default: int = 1000) -> None:
    """--bootstrap and --seed, as every fit with intervals takes them."""
    p.add_argument("--bootstrap", type=int, default=default,
                   help=f"bootstrap resamples for the 95%% intervals; 0: none (default {default})")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")


def add_collected_runs(p) -> None:
    """A `collect` verb's files: run.json files in, runs.csv and curves.csv out."""
    p.add_argument("--stable", nargs="*", default=[], help="run.json of each stable run")
    p.add_argument("--branches", nargs="+", required=True,
                   help="run.json of each decay branch")
    p.add_argument("--runs-out", required=True,
                   help="runs.csv to write: one row per branch, its final evaluation")
    p.add_argument("--curves-out", required=True,
                   help="curves.csv to write: one row per evaluation of every run")


SHAPE_HELP = {
    "n_layer": "transformer blocks",
    "n_embd": "embedding width",
    "n_head": "attention heads",
    "block_size": "sequence length in tokens",
    "batch_size": "sequences per step",
    "vocab_size": "vocabulary size (random tokens)",
}


def add_shape(p, **defaults: int) -> None:
    """Options of a model shape: `add_shape(p, n_layer=4, n_embd=128)` adds --n-layer 4 ..."""
    for key, default in defaults.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=int, default=default,
                       help=f"{SHAPE_HELP[key]} (default {default})")


def add_threads(p, default: int = 0) -> None:
    p.add_argument("--threads", type=int, default=default,
                   help=f"torch threads on CPU; 0: torch's default (default {default})")


def verbs(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict:
    """{("fit", "isoflop"): its parser, ...}: every verb path that runs a handler."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        return {path: parser}
    found = {}
    for action in groups:
        for name, sub in action.choices.items():
            found.update(verbs(sub, (*path, name)))
    return found


def parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every parser of the tree, groups included, as (path, parser)."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers(sub, (*path, name))
