"""A top-k routed mixture-of-experts MLP with a load-balancing loss.

`GPT` uses `MoEMLP` in place of the dense `MLP` when `GPTConfig.mlp == "moe"`. Each expert IS a
dense `model.MLP` (so the names `c_fc`, `c_proj` and their init rules carry over); a linear router
picks `k` of `n_experts` experts per token:

    p      = softmax(router(x))                 (tokens, E), computed in float32
    top-k  experts i_1..i_k by p, gates g_j = p[i_j]   (not renormalised over the k)
    y      = sum_j g_j * expert_{i_j}(x)

Choices, and where they come from:

- Gates are the softmax probabilities themselves, not renormalised over the chosen k. For k = 1
  this is Switch Transformer's rule (Fedus et al., arXiv:2101.03961, sec. 2.1): renormalising a
  single gate would make it 1 and leave the router without a gradient from the language-model
  loss. For k > 1 DeepSeekMoE (arXiv:2401.06066, eq. 3-5) does the same; GShard and Mixtral
  renormalise instead. With one expert p = 1 exactly, so MoE(E=1, k=1) is the dense MLP (a test).
- Dropless: every token reaches its k experts, no capacity factor and no dropped tokens
  (MegaBlocks, arXiv:2211.15841). Tokens are gathered per expert, so the work done is the
  active work, k experts per token.
- Load balancing (Switch, eq. 4-6): with f_i the share of the T*k (token, slot) assignments
  that go to expert i and P_i the mean router probability of expert i over the T tokens,

      aux = E * sum_i f_i * P_i

  which is 1 when routing is uniform (f_i = P_i = 1/E) and E when every token goes to one expert
  with certainty. f_i is not differentiable; the gradient flows through P_i. Normalising f over
  the k slots keeps aux = 1 at balance for every k (for k = 1 it is Switch's definition).
- The aux loss of each MoE layer is left on the module as `aux_loss` after a forward pass; `GPT`
  averages it over layers (so that its coefficient does not grow with depth) and adds
  `moe_aux_coef * aux` (Switch's alpha = 1e-2 by default) to the training loss only.
- The router is its own parameter kind, "router" (see `scalinglab.model.parametrization`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


def load_balancing_loss(probs: Tensor, chosen: Tensor, n_experts: int) -> Tensor:
    """Switch's aux loss E * sum_i f_i P_i from router probabilities `probs` (tokens, E) and
    the chosen expert ids `chosen` (tokens, k)."""
    counts = torch.bincount(chosen.flatten(), minlength=n_experts).to(probs.dtype)  # (E,)
    f = counts / chosen.numel()  # share of the (token, slot) assignments per expert
    P = probs.mean(dim=0)  # (E,)
    return n_experts * torch.sum(f * P)


class MoEMLP(nn.Module):
    """`n_experts` copies of `expert_cls(config)`, `moe_top_k` of them active per token."""

    def __init__(self, config, expert_cls: type[nn.Module]):
        super().__init__()
        self.n_experts = config.n_experts
        self.top_k = config.moe_top_k
        # experts before the router: the parameters keep the dense model's order
        self.experts = nn.ModuleList([expert_cls(config) for _ in range(config.n_experts)])
        self.router = nn.Linear(config.n_embd, config.n_experts, bias=False)
        self.aux_loss: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.size()
        flat = x.reshape(B * T, C)  # (BT, C)
        probs = F.softmax(self.router(flat).float(), dim=-1)  # (BT, E), float32 under autocast
        gates, chosen = torch.topk(probs, self.top_k, dim=-1)  # (BT, k) each
        self.aux_loss = load_balancing_loss(probs, chosen, self.n_experts)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            token, slot = torch.nonzero(chosen == e, as_tuple=True)  # (n_e,) each
            if token.numel() == 0:
                continue
            y = expert(flat[token])  # (n_e, C)
            out.index_add_(0, token, (gates[token, slot, None] * y).to(out.dtype))
        return out.view(B, T, C)
