"""Reading an input file: its content, or a `UserError` that names the file (one line, exit 2).

Below every layer that reads tables or fits (`scalinglab.cli`, `scalinglab.plots`), like
`scalinglab.atomic` for writing. pandas is imported inside `read_csv`: `scalinglab --help`
should not wait for it.
"""

from __future__ import annotations

import json
from pathlib import Path

from scalinglab.errors import UserError


def read_json(path, what: str = "file") -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None


def read_csv(path, what: str = "file"):
    """A DataFrame of the CSV file; `what` names the file in the message when it is missing."""
    import pandas as pd

    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: empty file") from None
