"""What a run records about how it was made: code version, libraries, device, data, and what
the job took: when it started and finished, its wall seconds, its peak memory."""

from __future__ import annotations

import platform
import resource
import socket
import subprocess
import sys
import time
from datetime import datetime
from importlib import metadata
from pathlib import Path

import torch

PACKAGES = ("scalinglab", "torch", "numpy", "pandas", "scipy", "tokenizers", "snakemake")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_sha() -> str:
    """The commit of the scalinglab checkout, with '-dirty' if it has local changes."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def timestamp(seconds: float) -> str:
    """Local time with its UTC offset, to the millisecond: 2026-05-09T07:35:25.123+02:00."""
    return datetime.fromtimestamp(seconds).astimezone().isoformat(timespec="milliseconds")


def peak_memory(device: torch.device) -> dict:
    """This process's peak resident set size and, on CUDA, the most memory torch allocated."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_rss = peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, else KiB
    cuda = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"peak_rss_bytes": int(peak_rss), "peak_cuda_bytes": cuda}


def reset_peak_memory(device: torch.device) -> bool:
    """Start the peak over from what is resident now, so that a job training several runs in
    turn reports each one's own peak. Linux resets the resident peak (and with it ru_maxrss)
    on a write of 5 to clear_refs; elsewhere the resident peak stays, and False says so (the
    CUDA peak starts over either way)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def record(spec: dict, data_meta: dict, device: torch.device, *, started: float) -> dict:
    """The provenance of a run whose job began training at `started` (time.time()) and ends now.

    `job_seconds` is this job's wall time from that start; a resumed job counts from its own
    start. Memory is this process's (rank 0's, under data parallelism) since it started or
    since `reset_peak_memory`.
    """
    finished = time.time()
    return {
        "spec": spec,
        "versions": package_versions(),
        "python": sys.version.split()[0],
        "git_sha": git_sha(),
        "device": device_description(device),
        "host": socket.gethostname(),
        "started": timestamp(started),
        "finished": timestamp(finished),
        "job_seconds": finished - started,
        **peak_memory(device),
        # every digest the tokenizer step recorded: token files, tokenizer, corpus splits
        "data": {k: v for k, v in data_meta.items() if "sha256" in k},
    }
