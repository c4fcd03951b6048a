"""scalinglab: a reproducible, workflow-managed scaling-law study for language models."""

__version__ = "0.1.0"
