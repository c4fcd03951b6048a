"""`python -m scalinglab VERB ...`: the one entry point that every workflow rule calls.

Each verb's arguments are declared here; the work is done by the module that owns the concept.
Heavy imports (torch, scipy) happen inside the handlers so that `--help` and config checks are fast.
A `UserError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from scalinglab.errors import EXIT_USER_ERROR, UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scalinglab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    from scalinglab import fit_cli

    fit_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except UserError as err:
        print(f"scalinglab {args.verb}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
