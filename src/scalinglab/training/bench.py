"""`scalinglab bench train`: the project's training step against a bare PyTorch loop.

Both loops train the same model (same size, same init) on batches of the same shape, and are timed
side by side in one process, alternating repeats, so that machine noise hits both alike. The bare
loop is the least a training step can do: forward, backward, AdamW step, zero_grad on batches
already in memory. The project's step adds what a real run needs: the LR schedule applied per
parameter group, gradient clipping and the batch gather from the memory-mapped token file.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from scalinglab import atomic
from scalinglab.model.flops import model_counts
from scalinglab.model.gpt import GPT, GPTConfig
from scalinglab.training.schedule import Schedule

# Dense bf16 tensor-core peaks in FLOP/s from the vendors' data sheets (SXM parts, no sparsity);
# MFU = model FLOPs per second / this peak (PaLM, arXiv:2204.02311, appendix B).
PEAK_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10": 125e12,
}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None  # no meaningful published peak for a shared CPU
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_FLOPS.items() if key in name), None)


def _spec(args) -> dict:
    return {
        "series_id": "bench",
        "seed": 0,
        "model": {"vocab_size": args.vocab_size, "block_size": args.block_size,
                  "n_layer": args.n_layer, "n_embd": args.n_embd, "n_head": args.n_head},
        "parametrization": {"name": "sp"},
        "training": {"batch_size": args.batch_size, "lr": 3e-3, "weight_decay": 0.1,
                     "beta1": 0.9, "beta2": 0.95, "grad_clip": 1.0, "eval_every": 10**9,
                     "eval_tokens": args.block_size * args.batch_size,
                     "checkpoint_every": 10**9, "device": "auto", "compile": args.compile},
        "schedule": {"kind": "wsd", "decay_fraction": 0.2, "decay_shape": "linear",
                     "final_lr_ratio": 0.0},
        "warmup_steps": 10,
        "flops_per_token": 0.0,
    }


def _write_tokens(folder: Path, vocab: int, n_tokens: int) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        tokens = rng.integers(0, vocab, size=n_tokens, dtype=np.uint16)
        atomic.write_with(folder / f"{split}.bin", lambda tmp, t=tokens: t.tofile(tmp))
    atomic.write_json(folder / "meta.json", {"dtype": "uint16", "vocab_size": vocab,
                                             "train_tokens": n_tokens, "val_tokens": n_tokens})


def _time_project(trainer, schedule: Schedule, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(schedule(trainer.step))
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _time_bare(model, optimizer, batches, steps: int, device) -> float:
    start = time.perf_counter()
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())
    for i in range(steps):
        x, y = batches[i % len(batches)]
        with autocast:
            _, loss = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run(args) -> None:
    from scalinglab.training.trainer import Trainer, make_schedule, pick_device

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = pick_device("auto")
    spec = _spec(args)
    config = GPTConfig(**spec["model"])
    spec["flops_per_token"] = model_counts(config).flops_per_token
    tokens_per_step = args.batch_size * args.block_size
    with tempfile.TemporaryDirectory() as tmp:
        _write_tokens(Path(tmp), args.vocab_size, tokens_per_step * 64 + 1)
        trainer = Trainer(spec, Path(tmp), device)
        schedule = make_schedule(spec, total_steps=10**9, decay_start=None)

        torch.manual_seed(0)
        bare_model = GPT(config).to(device)
        bare_model.load_state_dict(trainer.model.state_dict())
        if args.compile:
            bare_model = torch.compile(bare_model)
        bare_opt = torch.optim.AdamW(bare_model.parameters(), lr=3e-3, betas=(0.9, 0.95),
                                     weight_decay=0.1, fused=device.type == "cuda")
        batches = [
            tuple(t.to(device) for t in trainer.train_data.train_batch(i, args.batch_size, 0))
            for i in range(8)
        ]

        _time_project(trainer, schedule, 3)  # warm-up: allocator, kernels, page cache
        _time_bare(bare_model, bare_opt, batches, 3, device)
        project, bare = [], []
        for _ in range(args.repeats):
            project.append(_time_project(trainer, schedule, args.steps))
            bare.append(_time_bare(bare_model, bare_opt, batches, args.steps, device))

    tokens = args.steps * tokens_per_step
    project_tps = tokens / float(np.median(project))
    bare_tps = tokens / float(np.median(bare))
    print(f"model: n_layer={args.n_layer} n_embd={args.n_embd} n_head={args.n_head} "
          f"vocab={args.vocab_size} block={args.block_size} batch={args.batch_size} "
          f"on {device} ({torch.get_num_threads()} threads)")
    print(f"project training step : {project_tps:10.0f} tokens/s (median of {args.repeats})")
    print(f"bare PyTorch loop     : {bare_tps:10.0f} tokens/s (median of {args.repeats})")
    print(f"ratio project / bare  : {project_tps / bare_tps:.3f}")
    peak = peak_flops(device)
    model_flops = project_tps * spec["flops_per_token"]
    mfu = f"{model_flops / peak:.1%} of {peak:.3g}" if peak else "n/a (no known peak)"
    print(f"model FLOP/s          : {model_flops:.3g} ({spec['flops_per_token']:.3g} per token); "
          f"MFU {mfu}")
    if device.type == "cuda":
        print(f"peak GPU memory       : {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
