"""Atomic file writes: write a temporary sibling, then rename over the target.

An interrupted job then never leaves a truncated output that Snakemake (or a resume) would take
as complete: the file either has its old content, its new content, or does not exist. The
temporary file is fsync'ed before the rename, so a crash of the machine (not only of the job)
cannot leave a complete-looking name on empty blocks either.

`tempfile.mkstemp` makes a private file (mode 0600); the output gets the mode an ordinary
`open(..., "w")` would give it, 0666 less the umask (0644 under the usual 022), so collaborators
on a shared file system can read the results.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (/proc, kernel 4.7+).

    Elsewhere `os.umask` must set a value to return the old one; setting back the same value at
    once leaves a moment in which a file made by another thread gets umask 0o077: private,
    never more open than asked.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _fsync(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(target: str | os.PathLike):
    """Yield a temporary path next to `target`; rename it onto `target` if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        try:
            os.fchmod(fd, 0o666 & ~current_umask())
        finally:
            os.close(fd)
        yield Path(tmp)
        _fsync(tmp)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # the rename itself is durable once the folder's entry is written
        _fsync(target.parent)
    except OSError:  # some file systems (and Windows) cannot fsync a folder
        pass


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_json(target: str | os.PathLike, obj: Any) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_with(target: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """Call `writer(tmp_path)` and move the result onto `target` (for torch.save, savefig, ...)."""
    with atomic_path(target) as tmp:
        writer(tmp)


def _json_default(obj: Any):
    # numpy scalars and arrays show up in fit results; JSON wants plain Python numbers.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
