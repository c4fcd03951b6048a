#!/usr/bin/env bash
# The GPU check (docs/gpu.md): `bench train` at the GPT-2 small shape (~124M parameters) in bf16,
# with and without torch.compile (tokens/s, ratio to a bare loop, MFU, peak memory), and a
# 5-size x 3-budget mini study through snakemake with training.device: cuda; one JSON of results.
# Sized for one 8-minute call on a single H100 or H200 (--budget, default 470 s); no network.
#
#   scripts/gpu-check.sh [OUT.json] [--budget SECONDS]   # default OUT: results/gpu-check.json
#   scripts/gpu-check.sh --cpu-smoke /tmp/check.json     # the same parts on a CPU, in seconds
#
# Python: $PYTHON, else the repository's .venv/bin/python, else python3 on PATH (it needs the
# project's pinned dependencies, with a CUDA build of torch on a GPU machine).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${PYTHON:-}" ]]; then
    py="$PYTHON"
elif [[ -x "$repo/.venv/bin/python" ]]; then
    py="$repo/.venv/bin/python"
else
    py="$(command -v python3)"
fi
# this checkout's package first, for the script and for every job it starts
export PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" -m scalinglab.training.gpu_check "$@"
