"""`scalinglab fit ...`: the command line of the fitting library (owned by the fitting work)."""

from __future__ import annotations


def register(sub) -> None:
    parser = sub.add_parser("fit", help="fit scaling laws to a CSV of runs")
    parser.set_defaults(func=lambda args: parser.print_help())
