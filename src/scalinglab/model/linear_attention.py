"""Causal linear attention, computed chunk by chunk so that memory grows linearly with length.

`GPT` uses `LinearAttention` in place of softmax attention when `GPTConfig.attention ==
"linear"`. The variant is Katharopoulos et al., "Transformers are RNNs" (arXiv:2006.16236,
eq. 4-9): softmax(q.k) is replaced by the kernel phi(q).phi(k), with a normaliser, so that

    y_t = phi(q_t) S_t / (phi(q_t) . z_t),   S_t = sum_{s<=t} phi(k_s)^T v_s,
                                              z_t = sum_{s<=t} phi(k_s)

Feature maps (`GPTConfig.feature_map`):
    "elu"   phi(x) = elu(x) + 1   (Katharopoulos et al.; positive, though it rounds to 0 in
                                   float32 below x ~ -17)
    "relu"  phi(x) = relu(x)      (cosFormer's kernel without its cos re-weighting,
                                   arXiv:2202.08791; a query with phi = 0 gets an output of 0)

Computation: the sequence is cut into chunks of `chunk_size` tokens. Within a chunk the masked
quadratic form phi(Q) phi(K)^T is used; across chunks each chunk reads the running state (S, z)
summed over the chunks before it. This is the intra-/inter-block split of lightning attention
(Qin et al., arXiv:2401.04658; used at scale by MiniMax-01, arXiv:2501.08313), here with
Katharopoulos' kernel and normaliser rather than lightning attention's decay and output norm,
and with the inter-chunk prefix sum done for all chunks at once (the chunkwise-parallel form of
Yang et al., arXiv:2312.06635) instead of a loop. Per head it holds (T/c) states of d_head^2 and
(T/c) blocks of c^2 scores: O(T (c + d_head^2 / c)) memory, against O(T^2) for a quadratic form.
The kernel runs in (at least) float32 with autocast off: the states sum the whole prefix.

The projections are softmax attention's (`c_attn` for q, k, v; `c_proj` out; the head split of
`model.heads`), with the same names, shapes and init rules, so the two attentions have equal
parameter counts; the softmax scale (`attn_scale`, muP's 1/d_head) plays no part here, the
normaliser takes its place.
`scalinglab.model.flops` counts the kernel's FLOPs (the chunk size enters there).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from scalinglab.config.model import FEATURE_MAPS
from scalinglab.model.heads import merge_heads, split_heads

CHUNK_SIZE = 64
"""Tokens per chunk in the model (the kernel takes any; results agree to float32 rounding)."""
EPS = 1e-6
"""Added to the normaliser, which a ReLU feature map (or elu + 1 rounded to 0) can make 0."""


def feature_map(x: Tensor, name: str) -> Tensor:
    if name == "elu":
        return F.elu(x) + 1.0
    if name == "relu":
        return F.relu(x)
    raise ValueError(f"unknown feature map {name!r}; expected one of {', '.join(FEATURE_MAPS)}")


def causal_linear_attention(q: Tensor, k: Tensor, v: Tensor, feature: str = "elu",
                            chunk_size: int = CHUNK_SIZE) -> Tensor:
    """Causal linear attention of q, k, v (B, H, T, D), chunkwise; returns (B, H, T, D)."""
    B, H, T, D = q.shape
    dtype = q.dtype
    work = torch.promote_types(dtype, torch.float32)  # at least float32 (bf16 under autocast)
    with torch.autocast(q.device.type, enabled=False):
        q, k, v = feature_map(q.to(work), feature), feature_map(k.to(work), feature), v.to(work)
        c = max(1, min(chunk_size, T))
        pad = -T % c
        if pad:  # padding at the end: causal, so it never reaches a real position
            q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        n = (T + pad) // c
        q, k, v = (t.view(B, H, n, c, D) for t in (q, k, v))  # (B, H, n, c, D)
        # intra-chunk: the masked quadratic form
        mask = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
        scores = (q @ k.transpose(-1, -2)).masked_fill(~mask, 0.0)  # (B, H, n, c, c)
        num = scores @ v  # (B, H, n, c, D)
        den = scores.sum(-1)  # (B, H, n, c)
        # inter-chunk: the state summed over all earlier chunks (an exclusive prefix sum)
        kv = k.transpose(-1, -2) @ v  # (B, H, n, D, D), one chunk's phi(K)^T V
        ks = k.sum(-2)  # (B, H, n, D)
        S = F.pad(kv.cumsum(2), (0, 0, 0, 0, 1, 0))[:, :, :n]  # (B, H, n, D, D)
        z = F.pad(ks.cumsum(2), (0, 0, 1, 0))[:, :, :n]  # (B, H, n, D)
        num = num + q @ S  # (B, H, n, c, D)
        den = den + (q @ z.unsqueeze(-1)).squeeze(-1)  # (B, H, n, c)
        y = num / (den.unsqueeze(-1) + EPS)
        y = y.view(B, H, n * c, D)[:, :, :T]  # (B, H, T, D)
    return y.to(dtype)


def quadratic_linear_attention(q: Tensor, k: Tensor, v: Tensor, feature: str = "elu") -> Tensor:
    """The naive O(T^2) reference: the full masked phi(Q) phi(K)^T, normalised per row."""
    T = q.shape[-2]
    q, k = feature_map(q, feature), feature_map(k, feature)
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    scores = (q @ k.transpose(-1, -2)).masked_fill(~mask, 0.0)  # (B, H, T, T)
    return (scores @ v) / (scores.sum(-1, keepdim=True) + EPS)


class LinearAttention(nn.Module):
    """Drop-in for `model.CausalSelfAttention`: same projections, linear-time kernel."""

    def __init__(self, config, chunk_size: int = CHUNK_SIZE):
        super().__init__()
        self.n_head = config.n_head
        self.feature = config.feature_map
        self.chunk_size = chunk_size
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = split_heads(self.c_attn, x, self.n_head)  # 3 x (B, nh, T, hs)
        y = causal_linear_attention(q, k, v, self.feature, self.chunk_size)  # (B, nh, T, hs)
        return self.c_proj(merge_heads(y))  # (B, T, C)
