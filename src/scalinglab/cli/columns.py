"""The columns of a table of points that one fit of `scalinglab fit` uses, checked.

A column named on the command line must exist; values must be numeric and positive; rows with
a NaN, and runs marked diverged, are dropped and counted; an error names the file and column.
"""

from __future__ import annotations

import numpy as np

from scalinglab.errors import UserError


def require_named(df, path: str, flag: str, name: str | None) -> None:
    """A column named by `flag` (None: the default, which may be absent) must be in `df`."""
    if name is not None and name not in df.columns:
        have = ", ".join(map(str, df.columns))
        raise UserError(f"{path}: no column {name!r} ({flag}); columns are: {have}")


class Columns:
    """The numeric columns one fit uses, NaN rows dropped and counted, positivity checked.

    A table with a `diverged` column (runs.csv, curves.csv) also loses the rows marked true:
    a diverged run is a failed point, whatever loss it last reported (training.divergence).
    """

    def __init__(self, df, path: str, names: dict[str, str | None]):
        for role, name in names.items():
            if name is not None and name not in df.columns:
                have = ", ".join(map(str, df.columns))
                raise UserError(f"{path}: no column {name!r} (for {role}); columns are: {have}")
        used = {role: name for role, name in names.items() if name is not None}
        numeric = {}
        for role, name in used.items():
            if role == "run":
                continue
            try:
                numeric[role] = df[name].astype(float).to_numpy()
            except (TypeError, ValueError) as err:
                raise UserError(f"{path}: column {name!r} is not numeric") from err
        keep = np.ones(len(df), bool)
        for values in numeric.values():
            keep &= np.isfinite(values)
        if "run" in used:
            keep &= df[used["run"]].notna().to_numpy()
        diverged = np.zeros(len(df), bool)
        if "diverged" in df.columns:  # read from CSV as bool, or as text when it has gaps
            diverged = df["diverged"].astype(str).str.lower().isin(("true", "1", "1.0"))
            diverged = diverged.to_numpy()
        # a diverged run's loss is often NaN too: count it as diverged, not as a NaN row
        self.n_dropped_diverged = int(diverged.sum())
        self.n_dropped_nan = int((~keep & ~diverged).sum())
        keep &= ~diverged
        for role, values in numeric.items():
            bad = np.flatnonzero(keep & (values <= 0))
            if len(bad):
                raise UserError(
                    f"{path}: column {used[role]!r} has {len(bad)} non-positive value(s) "
                    f"(first at data row {bad[0] + 1}: {values[bad[0]]!r})"
                )
        self.values = {role: v[keep] for role, v in numeric.items()}
        if "run" in used:
            self.values["run"] = df[used["run"]].to_numpy()[keep]
        self.n = int(keep.sum())
        self.path = path

    def require(self, n_min: int, what: str) -> None:
        if self.n < n_min:
            parts = [f"{self.n_dropped_nan} NaN"] if self.n_dropped_nan else []
            parts += [f"{self.n_dropped_diverged} diverged"] if self.n_dropped_diverged else []
            dropped = f" after dropping {' and '.join(parts)} row(s)" if parts else ""
            raise UserError(f"{self.path}: {self.n} usable row(s){dropped}; {what} needs {n_min}")


def flops_columns(df, args, *, need_c: bool):
    """Pick C and D columns and say how the missing one is derived (the 'flops_convention').

    A column named on the command line must exist; the defaults C and D may be absent.
    """
    require_named(df, args.input, "--c-col", args.c_col)
    require_named(df, args.input, "--d-col", args.d_col)
    c_col = args.c_col or "C"
    d_col = args.d_col or "D"
    has_c, has_d = c_col in df.columns, d_col in df.columns
    if has_c and has_d:
        return c_col, d_col, f"C from column {c_col!r}, D from column {d_col!r}"
    if has_d:
        return None, d_col, f"D from column {d_col!r}; C = 6ND"
    if has_c:
        return c_col, None, f"C from column {c_col!r}; D = C/(6N)"
    need = "a FLOPs column" if need_c else "a tokens column"
    raise UserError(
        f"{args.input}: {need} is needed: no column {d_col!r} (--d-col) or {c_col!r} (--c-col)"
    )
