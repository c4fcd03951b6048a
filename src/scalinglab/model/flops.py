"""Parameter counts and training FLOPs per token, under a named counting convention.

The convention matters. Porian et al. (arXiv:2406.19146) trace the gap between Kaplan's and
Chinchilla's compute-optimal exponents to three factors, the first being the last layer's
(LM head's) FLOPs left out of the count, a large share of the compute at small scale (the
others: warmup length and optimizer tuning per size). Pearce & Song (arXiv:2406.12907) find
counting non-embedding instead of total parameters biases the exponent at small scale too. So
the convention is a config key (`flops.convention`), and N and N_total are both reported.

Counts, for the model in `scalinglab.model.gpt` (no biases, untied head, r = mlp_ratio):

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

Architecture variants (`GPTConfig.mlp`, `GPTConfig.attention`); E = n_experts, k = moe_top_k,
c = min(linear_attention.CHUNK_SIZE, block_size), d = d_head:

    MoE MLP (per block)   total:  E * 2r * n_embd^2 + E * n_embd (the router)
                          active: k * 2r * n_embd^2 + E * n_embd
    N         all non-embedding parameters, every expert included (the definition above)
    N_active  the non-embedding parameters one token passes through: k experts per MoE layer
              plus its router (every token is scored against all E experts); N when dense
    6N term   6 * N_active under every convention: a token's compute is its active parameters'
              (Hunyuan-Large, arXiv:2411.02265, and DeepSeekMoE, arXiv:2401.06066, count MoE
              compute this way). The routing matmul is the router's share of N_active; top-k and
              the softmax over E are left out like every other softmax.
    attention term, linear attention: 6 * n_layer * (c + d) * n_embd instead of
              6 * n_layer * block_size * n_embd. The same Kaplan "Mask" convention, the work of
              reading the context for a query: q.k against the c keys of its own chunk (the full
              chunk, as the softmax term counts the full context) plus phi(q) times the d x d
              running state of each head. The value side (scores times V inside the chunk, and
              the state update phi(k)^T v) is left out, as the softmax term leaves out the
              attention-weighted sum of values; counting it would double both terms.
"""

from __future__ import annotations

from dataclasses import dataclass

from scalinglab.config.flops import CONVENTIONS
from scalinglab.errors import UserError
from scalinglab.model.gpt import GPTConfig
from scalinglab.model.linear_attention import CHUNK_SIZE


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
    N_active: int | None = None
    """Non-embedding parameters a token passes through (MoE: k experts and the router);
    None in the constructor means N (a dense model)."""

    def __post_init__(self) -> None:
        if self.N_active is None:
            object.__setattr__(self, "N_active", self.N)


def non_embedding_params(cfg: GPTConfig, active: bool = False) -> int:
    """N: per block ln_1, c_attn (3C^2), attn c_proj (C^2), ln_2, c_fc and mlp c_proj (rC^2
    each; times the experts and plus the router for MoE); then ln_f. With `active`, an MoE
    layer counts only k experts (N_active)."""
    C, r = cfg.n_embd, cfg.mlp_ratio
    mlp = 2 * r * C * C
    if cfg.mlp == "moe":
        mlp = (cfg.moe_top_k if active else cfg.n_experts) * mlp + cfg.n_experts * C
    per_block = (3 + 1) * C * C + mlp + 2 * C
    return cfg.n_layer * per_block + C


def attention_context(cfg: GPTConfig) -> int:
    """The context length a query reads in the attention FLOP term: block_size for softmax,
    chunk + d_head for chunked linear attention (see the module docstring)."""
    if cfg.attention == "linear":
        return min(CHUNK_SIZE, cfg.block_size) + cfg.d_head
    return cfg.block_size


def model_counts(cfg: GPTConfig, convention: str = "6N+attn+head") -> ModelCounts:
    """N, N_total, N_active and the training FLOPs per token of the model `cfg` describes."""
    if convention not in CONVENTIONS:
        raise UserError(
            f"flops.convention: unknown {convention!r}; expected one of " + ", ".join(CONVENTIONS)
        )
    N = non_embedding_params(cfg)
    N_active = non_embedding_params(cfg, active=True)
    N_total = N + (2 * cfg.vocab_size + cfg.block_size) * cfg.n_embd
    flops = 6 * N_active
    if convention in ("6N+attn", "6N+attn+head"):
        flops += 6 * cfg.n_layer * attention_context(cfg) * cfg.n_embd
    if convention == "6N+attn+head":
        flops += 6 * cfg.n_embd * cfg.vocab_size
    return ModelCounts(N=N, N_total=N_total, flops_per_token=float(flops), convention=convention,
                       N_active=N_active)
