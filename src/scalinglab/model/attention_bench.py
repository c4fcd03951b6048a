"""Softmax (SDPA) against linear attention, timed side by side at each sequence length."""

from __future__ import annotations

import time

import torch
import torch.nn as nn
from torch import Tensor

from scalinglab.model.gpt import CausalSelfAttention, GPTConfig
from scalinglab.model.linear_attention import CHUNK_SIZE, LinearAttention


def benchmark(seq_lens=(256, 1024, 4096), *, n_embd: int = 128, n_head: int = 4,
              batch_size: int = 1, repeats: int = 3, backward: bool = True,
              chunk_size: int = CHUNK_SIZE, device: str = "cpu") -> list[dict]:
    """Tokens/s of one attention block, softmax (SDPA) against linear, at each length.

    Both modules have the same weights' shapes and see the same input; they are timed in
    alternation, `repeats` times each (best of), forward plus backward unless `backward` is off.
    """
    rows = []
    for T in seq_lens:
        cfg = GPTConfig(vocab_size=2, block_size=T, n_layer=1, n_embd=n_embd, n_head=n_head)
        torch.manual_seed(0)
        blocks = {"softmax": CausalSelfAttention(cfg).to(device),
                  "linear": LinearAttention(cfg, chunk_size).to(device)}
        x = torch.randn(batch_size, T, n_embd, device=device, requires_grad=backward)
        best = {name: float("inf") for name in blocks}
        for round_ in range(repeats + 1):
            for name, block in blocks.items():
                seconds = _time_once(block, x, backward, device)
                if round_:  # round 0 warms up
                    best[name] = min(best[name], seconds)
        tokens = batch_size * T
        row = {"seq_len": T, "batch_size": batch_size, "n_embd": n_embd, "n_head": n_head,
               "backward": backward}
        for name in blocks:
            row[f"{name}_tokens_per_s"] = tokens / best[name]
        row["linear_over_softmax"] = row["linear_tokens_per_s"] / row["softmax_tokens_per_s"]
        rows.append(row)
    return rows


def _time_once(block: nn.Module, x: Tensor, backward: bool, device: str) -> float:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    start = time.perf_counter()
    if backward:
        block(x).sum().backward()
        block.zero_grad(set_to_none=True)
        x.grad = None
    else:
        with torch.no_grad():
            block(x)
    sync()
    return time.perf_counter() - start
