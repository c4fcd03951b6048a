"""Atomic writes: the umask's mode (not mkstemp's 0600), fsync before the rename, no debris."""

from __future__ import annotations

import os
import stat
import sys

import pytest
import torch

from scalinglab import atomic
from scalinglab.training import checkpoint


@pytest.fixture
def umask():
    """Set the process umask for one test, and restore it."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield os.umask
    os.umask(saved)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)],
                         ids=["022", "077", "002"])
def test_outputs_get_the_mode_the_umask_gives(tmp_path, umask, mask, expected):
    umask(mask)
    assert atomic.current_umask() == mask
    atomic.write_text(tmp_path / "a.txt", "x\n")
    atomic.write_json(tmp_path / "sub" / "b.json", {"a": 1})
    atomic.write_with(tmp_path / "c.pt", lambda tmp: torch.save({"w": torch.zeros(2)}, tmp))
    for name in ("a.txt", "sub/b.json", "c.pt"):
        assert mode(tmp_path / name) == expected, name
    # the same as a file opened the ordinary way
    (tmp_path / "plain.txt").write_text("x\n")
    assert mode(tmp_path / "plain.txt") == expected


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    atomic.write_text(target, "old\n")

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic.write_with(target, broken)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
def test_checkpoints_are_fsynced_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    target = tmp_path / "resume.pt"
    checkpoint.save(target, model=model, optimizer=optimizer, step=3, metrics=[], spec={},
                    elapsed=1.0)
    renames = [e for e in events if e[0] == "replace"]
    assert len(renames) == 1 and renames[0][2] == str(target)
    tmp = renames[0][1]
    assert events.index(("fsync", tmp)) < events.index(renames[0])
    assert events[-1] == ("fsync", str(tmp_path))  # then the folder, so the rename lasts
    assert checkpoint.load(target, {})["step"] == 3
