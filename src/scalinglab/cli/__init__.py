"""`python -m scalinglab VERB ...`: the one command line that every workflow rule calls
(`scalinglab.cli.main` builds the parser; each verb group has its module here)."""
