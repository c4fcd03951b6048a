"""Reading a verb's inputs and writing its outputs, for every module of `scalinglab.cli`.

A missing, empty or unreadable input is a `UserError` that names the file (one line, exit 2);
the CSV and JSON readers are `scalinglab.readers`, which the figures share. Every output is
written atomically (`scalinglab.atomic`), JSON as strict JSON (NaN and inf become null). pandas
is imported inside the readers: `scalinglab --help` should not wait for it.
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from scalinglab import atomic
from scalinglab.config import StudyConfig, from_dict, load_config
from scalinglab.errors import UserError
from scalinglab.readers import read_csv, read_json

__all__ = ["read_csv", "read_json"]  # the verbs import every reader from here


def read_table(path: str):
    """A DataFrame from CSV, JSON records or Parquet; a `UserError` naming the file otherwise."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise UserError(f"input file {path!r} does not exist")
    try:
        if p.suffix.lower() == ".json":
            return pd.read_json(p)
        if p.suffix.lower() == ".parquet":
            return pd.read_parquet(p)
        return pd.read_csv(p)
    except Exception as err:  # pandas raises many types; every one means "cannot read this file"
        raise UserError(f"cannot read {path!r}: {err}".splitlines()[0]) from err


def study_config(path: str | None):
    """The study config from a resolved JSON spec, a YAML file (over no defaults file), or the
    built-in defaults when `path` is None."""
    if path is None:
        return from_dict(StudyConfig, {})
    if str(path).endswith((".yaml", ".yml")):
        return load_config(path)
    return from_dict(StudyConfig, read_json(path, "config"))


def merged_config(paths: list[str]) -> dict:
    """Merge YAML files the way `snakemake --configfile` does: later files override, mappings
    merge key by key, lists are replaced."""
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
        deep_update(merged, data)
    return merged


def deep_update(base: dict, new: dict) -> None:
    """Merge `new` into `base` in place, as `merged_config` merges one file over the others."""
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value


def finite_or_none(obj):
    """NaN and inf become null (json.dumps would write the non-standard NaN and Infinity);
    numpy arrays and scalars become lists and numbers."""
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_none(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, str):
        return finite_or_none(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path, data: dict) -> None:
    atomic.write_json(path, finite_or_none(data))
    print(f"wrote {path}")


def write_csv(path, table) -> None:
    atomic.write_text(path, table.to_csv(index=False))
