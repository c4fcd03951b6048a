"""`python -m scalinglab VERB ...`: the one command line that every workflow rule calls."""

from scalinglab.cli.main import main, merged_config

__all__ = ["main", "merged_config"]
