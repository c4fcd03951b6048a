"""The multi-head view that both attentions (`gpt.CausalSelfAttention`, softmax, and
`linear_attention.LinearAttention`) put around their kernel: one fused q, k, v projection
`c_attn` split into heads, and the heads put side by side again for `c_proj`."""

from __future__ import annotations

from torch import Tensor, nn


def split_heads(c_attn: nn.Linear, x: Tensor, n_head: int) -> tuple[Tensor, Tensor, Tensor]:
    """q, k, v (B, nh, T, hs) of `x` (B, T, C): one matmul for all heads, then a view per head."""
    B, T, C = x.size()
    q, k, v = c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
    q = q.view(B, T, n_head, C // n_head).transpose(1, 2)  # (B, nh, T, hs)
    k = k.view(B, T, n_head, C // n_head).transpose(1, 2)  # (B, nh, T, hs)
    v = v.view(B, T, n_head, C // n_head).transpose(1, 2)  # (B, nh, T, hs)
    return q, k, v


def merge_heads(y: Tensor) -> Tensor:
    """(B, nh, T, hs) -> (B, T, C), the heads side by side."""
    B, n_head, T, hs = y.size()
    return y.transpose(1, 2).contiguous().view(B, T, n_head * hs)
