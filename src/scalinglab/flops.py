"""Parameter counts and training FLOPs per token, under a named counting convention.

The convention matters. Porian et al. (arXiv:2406.19146) trace the gap between Kaplan's and
Chinchilla's compute-optimal exponents to three factors, the first being the last layer's
(LM head's) FLOPs left out of the count, a large share of the compute at small scale (the
others: warmup length and optimizer tuning per size). Pearce & Song (arXiv:2406.12907) find
counting non-embedding instead of total parameters biases the exponent at small scale too. So
the convention is a config key (`flops.convention`), and N and N_total are both reported.

Counts, for the model in `scalinglab.model` (no biases, untied head, r = mlp_ratio):

    N        non-embedding parameters: everything except wte, wpe and lm_head (Kaplan,
             arXiv:2001.08361, sec. 2.1), norm gains included:
             n_layer * ((4 + 2r) * n_embd^2 + 2 * n_embd) + n_embd
    N_total  N + (2 * vocab_size + block_size) * n_embd, equal to sum(p.numel()) of the model

Training FLOPs per token (forward + backward = 3 x forward, 2 FLOPs per multiply-add):

    "6N"             6 * N
    "6N+attn"        6 * N + 6 * n_layer * block_size * n_embd
    "6N+attn+head"   6 * N + 6 * n_layer * block_size * n_embd + 6 * n_embd * vocab_size

The attention term is Kaplan's (Table 1): C_forward = 2N + 2 * n_layer * n_ctx * d_attn, with
d_attn = n_embd and n_ctx = block_size, times 3 for training. We use the full context, not the
causal average (block_size + 1) / 2, to stay on Kaplan's published convention so that fitted
exponents compare with the literature; a causal-aware kernel does about half of this work. Like
Kaplan's "Mask" row it counts the q.k product only; Chinchilla (arXiv:2203.15556, App. F) also
counts the attention-weighted sum of values, which would double it. The head term is Kaplan's
"De-embed" row, 2 * n_embd * vocab_size forward, which N leaves out since lm_head is an
embedding-sized matrix; for tiny models with a large vocabulary it can dominate the total.
Norms, softmax, GELU and the embedding lookups are left out under every convention.
"""

from __future__ import annotations

from dataclasses import dataclass

from scalinglab.errors import UserError
from scalinglab.model import GPTConfig

CONVENTIONS = ("6N", "6N+attn", "6N+attn+head")


@dataclass(frozen=True)
class ModelCounts:
    """Parameter counts and FLOPs per token of one model size."""

    N: int
    """Non-embedding parameters: everything except wte, wpe and lm_head."""
    N_total: int
    """All parameters, sum(p.numel()) of the built model."""
    flops_per_token: float
    """Training FLOPs per token under `convention`."""
    convention: str
    """One of CONVENTIONS."""


def non_embedding_params(cfg: GPTConfig) -> int:
    """N: per block ln_1, c_attn (3C^2), attn c_proj (C^2), ln_2, c_fc and mlp c_proj (rC^2
    each); then ln_f."""
    C, r = cfg.n_embd, cfg.mlp_ratio
    per_block = (3 + 1 + 2 * r) * C * C + 2 * C
    return cfg.n_layer * per_block + C


def model_counts(cfg: GPTConfig, convention: str = "6N+attn+head") -> ModelCounts:
    """N, N_total and the training FLOPs per token of the model `cfg` describes."""
    if convention not in CONVENTIONS:
        raise UserError(
            f"flops.convention: unknown {convention!r}; expected one of " + ", ".join(CONVENTIONS)
        )
    N = non_embedding_params(cfg)
    N_total = N + (2 * cfg.vocab_size + cfg.block_size) * cfg.n_embd
    flops = 6 * N
    if convention in ("6N+attn", "6N+attn+head"):
        flops += 6 * cfg.n_layer * cfg.block_size * cfg.n_embd
    if convention == "6N+attn+head":
        flops += 6 * cfg.n_embd * cfg.vocab_size
    return ModelCounts(N=N, N_total=N_total, flops_per_token=float(flops), convention=convention)
