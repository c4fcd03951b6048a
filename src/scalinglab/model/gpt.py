"""A nanoGPT-style decoder-only transformer, all of it in this file but the split of q, k, v
into heads (`model.heads`, which linear attention shares).

Architecture (after karpathy/nanoGPT, with the names kept so that readers can map it 1:1):

- token embedding `wte` plus learned absolute position embedding `wpe`, times `emb_scale`;
- `n_layer` pre-norm blocks `h[i]`: x = x + residual_scale * attn(ln_1(x)), then
  x = x + residual_scale * mlp(ln_2(x));
- causal self-attention through `F.scaled_dot_product_attention(..., is_causal=True, scale=...)`;
- a GELU MLP of hidden width `mlp_ratio * n_embd`;
- a final LayerNorm `ln_f` and an UNTIED readout `lm_head`, whose output is times `logit_scale`.

No biases anywhere (Linear(bias=False), LayerNorm(bias=False)): nanoGPT reports them a bit better
and faster without, and it leaves exactly one kind of 1-D parameter (norm gains).

The readout is untied from `wte` on purpose. muP (Yang et al., arXiv:2203.03466) treats the
embedding as an input layer (width-independent init and learning rate, no output multiplier) and
the readout as an output layer (logits times 1/m); with a shared matrix the two rules would
fight over one tensor. Untying costs vocab_size * n_embd parameters, which `flops.py` counts.

This file never branches on the parametrization. The four multipliers in `GPTConfig` are the
whole interface: `model.parametrization` computes them, initialises the weights and builds
the optimizer groups from `GPT.parameter_kinds()`. `GPT.__init__` leaves torch's default init in
place; call `parametrization.init_weights` before training.

Architecture variants are selected by `GPTConfig` and live in their own modules, so that this
file stays the dense softmax model unless asked otherwise (the defaults are that model):

- `attention="linear"`: `linear_attention.LinearAttention`, causal linear attention with the
  `feature_map` kernel, chunked (Katharopoulos et al., arXiv:2006.16236);
- `mlp="moe"`: `moe.MoEMLP`, `n_experts` dense MLPs of which `moe_top_k` run per token, with
  Switch's load-balancing loss (arXiv:2101.03961). In training mode the returned loss is
  cross-entropy + `moe_aux_coef` * (aux loss averaged over layers); in eval mode it is the
  cross-entropy alone, so validation losses compare across variants.

Activations for a muP coordinate check: pass a dict as `forward(..., activations=acts)` and it is
filled with detached tensors under these names:

    "emb"          embedding output, emb_scale * (wte + wpe)          (B, T, C)
    "h.{i}.attn"   block i's attention branch as added to the stream  (B, T, C)
    "h.{i}.mlp"    block i's MLP branch as added to the stream        (B, T, C)
    "logits"       logits after logit_scale                           (B, T, V)

Branch outputs are recorded after `residual_scale`, logits after `logit_scale` and the embedding
after `emb_scale`: what reaches the residual stream and the loss is what muP keeps O(1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from scalinglab.config.model import ATTENTIONS, FEATURE_MAPS, MLPS
from scalinglab.errors import UserError
from scalinglab.model.heads import merge_heads, split_heads
from scalinglab.model.linear_attention import LinearAttention
from scalinglab.model.moe import MoEMLP

# "router": the MoE gating matrix (scalinglab.model.moe); absent from dense models
PARAMETER_KINDS = ("embedding", "position", "hidden", "router", "readout", "vector")


@dataclass(frozen=True)
class GPTConfig:
    """Shape of the model plus the multipliers that a parametrization sets."""

    vocab_size: int
    """Number of token ids; the embedding has this many rows, the readout this many outputs."""
    block_size: int
    """Longest sequence (context length); the position embedding has this many rows."""
    n_layer: int
    """Number of transformer blocks."""
    n_embd: int
    """Width of the residual stream (d_model)."""
    n_head: int
    """Attention heads; n_embd must be divisible by it (d_head = n_embd / n_head)."""
    mlp_ratio: int = 4
    """MLP hidden width = mlp_ratio * n_embd."""
    emb_scale: float = 1.0
    """Multiplies the embedding output (wte + wpe)."""
    logit_scale: float = 1.0
    """Multiplies the logits."""
    attn_scale: float | None = None
    """Softmax scale of q.k; None means 1/sqrt(d_head) (the SDPA default)."""
    residual_scale: float = 1.0
    """Multiplies each residual branch (attention and MLP outputs) before it is added."""
    attention: str = "softmax"
    """"softmax" (SDPA) or "linear" (scalinglab.model.linear_attention)."""
    feature_map: str = "elu"
    """Kernel of linear attention: "elu" (elu + 1) or "relu". Unused by softmax attention."""
    mlp: str = "dense"
    """"dense" (one GELU MLP) or "moe" (model.moe: n_experts MLPs, moe_top_k per token)."""
    n_experts: int = 1
    """Experts per MoE layer."""
    moe_top_k: int = 1
    """Experts each token is routed to (at most n_experts)."""
    moe_aux_coef: float = 0.01
    """Weight of the load-balancing loss in the training loss (Switch's alpha)."""

    def __post_init__(self) -> None:
        for key in ("vocab_size", "block_size", "n_layer", "n_embd", "n_head", "mlp_ratio",
                    "n_experts", "moe_top_k"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise UserError(f"{key}: must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise UserError(
                f"n_head: n_embd={self.n_embd} is not divisible by n_head={self.n_head}"
            )
        for key, offered in (("attention", ATTENTIONS), ("feature_map", FEATURE_MAPS),
                             ("mlp", MLPS)):
            if getattr(self, key) not in offered:
                raise UserError(f"{key}: unknown {getattr(self, key)!r}; expected one of "
                                + ", ".join(offered))
        if self.moe_top_k > self.n_experts:
            raise UserError(f"moe_top_k: {self.moe_top_k} is more than n_experts="
                            f"{self.n_experts}")
        if not self.moe_aux_coef >= 0:
            raise UserError(f"moe_aux_coef: must be >= 0, got {self.moe_aux_coef!r}")

    @property
    def d_head(self) -> int:
        return self.n_embd // self.n_head


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.scale = config.attn_scale
        # query, key and value projections for all heads in one matmul
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = split_heads(self.c_attn, x, self.n_head)  # 3 x (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.c_proj(merge_heads(y))  # (B, T, C)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.mlp_ratio * config.n_embd, bias=False)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(config.mlp_ratio * config.n_embd, config.n_embd, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))  # (B, T, C) -> (B, T, r*C) -> (B, T, C)


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.residual_scale = config.residual_scale
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=False)
        linear = config.attention == "linear"
        self.attn = LinearAttention(config) if linear else CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=False)
        self.mlp = MoEMLP(config, MLP) if config.mlp == "moe" else MLP(config)

    def forward(self, x: Tensor, activations: dict | None = None, name: str = "") -> Tensor:
        a = self.residual_scale * self.attn(self.ln_1(x))  # (B, T, C)
        x = x + a
        m = self.residual_scale * self.mlp(self.ln_2(x))  # (B, T, C)
        if activations is not None:
            activations[f"{name}.attn"] = a.detach()
            activations[f"{name}.mlp"] = m.detach()
        return x + m


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=False),
            )
        )
        # untied from wte: see the module docstring
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)

    def forward(
        self,
        idx: Tensor,
        targets: Tensor | None = None,
        *,
        activations: dict[str, Tensor] | None = None,
        last: int | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Logits (B, T, V) for token ids `idx` (B, T), and the mean cross-entropy against
        `targets` (B, T) when given (positions with target -1 are ignored). If `activations`
        is a dict, it is filled as described in the module docstring. `last`: logits for the
        last `last` positions only, (B, last, V), without targets (scoring a continuation
        needs no more, and the readout is most of a small model's cost)."""
        B, T = idx.size()
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
        pos = torch.arange(T, dtype=torch.long, device=idx.device)  # (T,)
        tok_emb = self.transformer.wte(idx)  # (B, T, C)
        pos_emb = self.transformer.wpe(pos)  # (T, C), broadcast over the batch
        x = self.config.emb_scale * (tok_emb + pos_emb)  # (B, T, C)
        if activations is not None:
            activations["emb"] = x.detach()
        for i, block in enumerate(self.transformer.h):
            x = block(x, activations, f"h.{i}")  # (B, T, C)
        x = self.transformer.ln_f(x)  # (B, T, C)
        if last is not None:
            if targets is not None:
                raise ValueError("`last` gives logits only: pass no targets with it")
            x = x[:, -last:]
        # the readout is linear: scaling its (B, T, C) input is the same product as scaling the
        # (B, T, V) logits, at n_embd / vocab_size of the cost
        if self.config.logit_scale != 1.0:
            x = self.config.logit_scale * x
        logits = self.lm_head(x)  # (B, T, V)
        if activations is not None:
            activations["logits"] = logits.detach()
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1
            )
            if self.training and self.config.mlp == "moe":
                aux = torch.stack([block.mlp.aux_loss for block in self.transformer.h]).mean()
                loss = loss + self.config.moe_aux_coef * aux
        return logits, loss

    def parameter_kinds(self) -> dict[str, str]:
        """Map each parameter name to its kind, the key of the parametrization table:

        "embedding" wte, "position" wpe, "readout" lm_head, "vector" any 1-D parameter
        (the LayerNorm gains), "router" an MoE router, "hidden" every other (matrix) weight
        inside the blocks (MoE experts included).
        """
        kinds = {}
        for name, p in self.named_parameters():
            if name == "transformer.wte.weight":
                kinds[name] = "embedding"
            elif name == "transformer.wpe.weight":
                kinds[name] = "position"
            elif name == "lm_head.weight":
                kinds[name] = "readout"
            elif p.ndim < 2:
                kinds[name] = "vector"
            elif name.endswith("mlp.router.weight"):
                kinds[name] = "router"
            else:
                kinds[name] = "hidden"
        return kinds
