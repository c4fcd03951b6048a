"""Standard parametrization (SP) and muP as one table of named rules.

muP (Maximal Update Parametrization; Yang et al., Tensor Programs V, arXiv:2203.03466) scales
init, learning rates and a few multipliers with the width multiplier m = n_embd / base_width so
that a learning rate tuned on a narrow proxy stays optimal as the model widens (Cerebras-GPT,
arXiv:2304.03208; MiniCPM, arXiv:2404.06395). SP here is nanoGPT/GPT-2: a constant init std
and one learning rate for everything. Under SP, m plays no part.

Every rule below is either width-independent or a power of m, so the table is `WIDTH_EXPONENTS`
(the power of m under each parametrization) plus `ATTN_SCALE_AUTO`. At m = 1 every power is 1,
so muP and SP coincide whenever their remaining settings (attn_scale, output_mult, emb_scale,
depth_scale) agree; a test checks that.

| rule | applies to | SP | muP |
|---|---|---|---|
| `embedding.init_std` | `wte`, `wpe` | init_std | init_std |
| `embedding.lr` | `wte`, `wpe` | lr | lr |
| `emb_scale` | embedding output | emb_scale | emb_scale |
| `hidden.init_std` | matrices in blocks | init_std | init_std / sqrt(m) |
| `residual.init_std` | `c_proj` (attn, mlp) | × 1/sqrt(2·n_layer) | × 1/sqrt(2·n_layer) |
| `hidden.lr` | matrices in blocks | lr | lr / m |
| `router.init_std` | MoE `router` | init_std | init_std / sqrt(m) |
| `router.lr` | MoE `router` | lr | lr / m |
| `readout.init_std` | `lm_head` | init_std | init_std |
| `readout.lr` | `lm_head` | lr | lr |
| `logits.scale` | logits | output_mult | output_mult / m |
| `attn_scale` ("auto") | q·k scores | 1/sqrt(d_head) | 1/d_head |
| `vector` | LayerNorm gains | init 1, lr, no wd | init 1, lr, no wd |
| `weight_decay` | all matrices | λ | λ (coupled with lr, see below) |
| `depth_scale` (opt.) | residual branches | × 1/sqrt(n_layer) | × 1/sqrt(n_layer) |

Why each muP rule (for Adam; Tensor Programs V, Table 3, in its equivalent output-multiplier form):
- hidden init: variance ∝ 1/fan_in keeps pre-activations O(1); init_std is the std at base width.
- hidden lr / m: an Adam update has O(1) entries whatever the gradient scale, and a matrix sums
  fan_in of them, so the per-entry step must shrink like 1/fan_in to move activations by O(1).
- embeddings, positions and norm gains have no width-sized fan_in: init and lr stay fixed.
- MoE router (`scalinglab.moe`): its fan_in is the width but its fan_out (n_experts) is not, so
  strict muP would treat it like the readout (logits shrinking like 1/m). We give it the hidden
  rules instead, so that its logits, and hence the routing, are O(1) at init at every width;
  being its own kind, it has its own optimizer group and can be given other rules here. Experts
  are ordinary hidden matrices (their `c_proj` gets the residual init below).
- readout: we keep its init and lr fixed and multiply the logits by output_mult / m, the
  multiplier form used by Cerebras-GPT and MiniCPM (`dim_model_base`), rather than a
  zero-initialised readout; both are muP, and this one keeps SP and muP identical at m = 1.
- attention 1/d_head: after training q and k are correlated, so q·k grows like d_head, not
  sqrt(d_head). "linear" is literally 1/d_head (as in Cerebras-GPT and EleutherAI/nanoGPT-mup),
  so at d_head = 64 scores are 8x smaller than SP's; set attn_scale="sqrt" to compare like with
  like.
- residual projections: GPT-2's 1/sqrt(2·n_layer) on `c_proj` init (two branches per block) is
  kept under both, so it is not what distinguishes them. `depth_scale` is separate: a
  1/sqrt(n_layer) multiplier on every branch, MiniCPM's scale_depth/sqrt(n_layer) with
  scale_depth = 1 (MiniCPM itself uses 1.4; Depth-muP, arXiv:2310.02244, uses 1/sqrt(L)).

Weight decay under muP: torch's AdamW shrinks p by lr·λ per step, with the group's lr. We keep
λ the same in every group, so the hidden groups' shrink scales by 1/m exactly like their update
("coupled"): decay and update stay in the same ratio at every width, and the equilibrium weight
scale, ∝ sqrt(lr/λ), shrinks like the init std. The alternative ("independent", λ·m so that
lr·λ is width-independent) is what microsoft/mup's MuAdamW does and what Wang & Aitchison,
arXiv:2405.13698, argue for from the EMA timescale 1/(lr·λ). Norm gains get no decay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from scalinglab.errors import UserError
from scalinglab.model import GPT, PARAMETER_KINDS

PARAMETRIZATIONS = ("sp", "mup")
ATTN_SCALES = ("auto", "sqrt", "linear")

# The table: the power of m each rule is scaled by, under (SP, muP).
WIDTH_EXPONENTS: dict[str, dict[str, float]] = {
    "embedding.init_std": {"sp": 0.0, "mup": 0.0},
    "embedding.lr": {"sp": 0.0, "mup": 0.0},
    "position.init_std": {"sp": 0.0, "mup": 0.0},
    "position.lr": {"sp": 0.0, "mup": 0.0},
    "hidden.init_std": {"sp": 0.0, "mup": -0.5},
    "hidden.lr": {"sp": 0.0, "mup": -1.0},
    "router.init_std": {"sp": 0.0, "mup": -0.5},
    "router.lr": {"sp": 0.0, "mup": -1.0},
    "readout.init_std": {"sp": 0.0, "mup": 0.0},
    "readout.lr": {"sp": 0.0, "mup": 0.0},
    "vector.lr": {"sp": 0.0, "mup": 0.0},
    "logits.scale": {"sp": 0.0, "mup": -1.0},
}
# What attn_scale="auto" means under each: q.k / sqrt(d_head) or q.k / d_head.
ATTN_SCALE_AUTO = {"sp": "sqrt", "mup": "linear"}


@dataclass(frozen=True)
class ParametrizationConfig:
    """Which parametrization, and its width-independent settings."""

    name: str = "sp"
    """"sp" (nanoGPT/GPT-2 standard parametrization) or "mup"."""
    base_width: int = 64
    """Width at which muP equals SP: m = n_embd / base_width. Ignored under SP."""
    init_std: float = 0.02
    """Std of every weight matrix at base width (hidden ones shrink like 1/sqrt(m) under muP)."""
    emb_scale: float = 1.0
    """Multiplier on the embedding output (MiniCPM's scale_emb)."""
    output_mult: float = 1.0
    """Logit multiplier at base width; muP divides it by m."""
    attn_scale: str = "auto"
    """"auto" (1/sqrt(d_head) under SP, 1/d_head under muP), "sqrt" or "linear"."""
    depth_scale: bool = False
    """Multiply each residual branch by 1/sqrt(n_layer) (MiniCPM scale_depth/sqrt(n_layer))."""

    def __post_init__(self) -> None:
        if self.name not in PARAMETRIZATIONS:
            raise UserError(
                f"parametrization.name: unknown {self.name!r}; expected one of "
                + ", ".join(PARAMETRIZATIONS)
            )
        if self.attn_scale not in ATTN_SCALES:
            raise UserError(
                f"parametrization.attn_scale: unknown {self.attn_scale!r}; expected one of "
                + ", ".join(ATTN_SCALES)
            )
        if not isinstance(self.base_width, int) or self.base_width <= 0:
            raise UserError(
                f"parametrization.base_width: must be a positive integer, got {self.base_width!r}"
            )
        for key in ("init_std", "emb_scale", "output_mult"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise UserError(f"parametrization.{key}: must be positive, got {value!r}")


def width_multiplier(pcfg: ParametrizationConfig, n_embd: int) -> float:
    """m = n_embd / base_width under muP; 1 under SP (where base_width plays no part)."""
    if pcfg.name == "sp":
        return 1.0
    if n_embd < pcfg.base_width:
        raise UserError(
            f"parametrization.base_width: muP needs n_embd >= base_width, "
            f"got n_embd={n_embd} < base_width={pcfg.base_width}"
        )
    return n_embd / pcfg.base_width


def _rule(pcfg: ParametrizationConfig, rule: str, m: float) -> float:
    """The factor a table rule applies at width multiplier m."""
    return m ** WIDTH_EXPONENTS[rule][pcfg.name]


def model_multipliers(
    pcfg: ParametrizationConfig, n_layer: int, n_embd: int, n_head: int
) -> dict[str, float]:
    """The GPTConfig keyword arguments emb_scale, logit_scale, attn_scale, residual_scale."""
    m = width_multiplier(pcfg, n_embd)
    d_head = n_embd // n_head
    attn = ATTN_SCALE_AUTO[pcfg.name] if pcfg.attn_scale == "auto" else pcfg.attn_scale
    return {
        "emb_scale": pcfg.emb_scale,
        "logit_scale": pcfg.output_mult * _rule(pcfg, "logits.scale", m),
        "attn_scale": 1.0 / math.sqrt(d_head) if attn == "sqrt" else 1.0 / d_head,
        "residual_scale": 1.0 / math.sqrt(n_layer) if pcfg.depth_scale else 1.0,
    }


def init_std(pcfg: ParametrizationConfig, name: str, kind: str, n_layer: int, m: float) -> float:
    """The init std of one weight matrix (not used for "vector" params, which start at 1)."""
    std = pcfg.init_std * _rule(pcfg, f"{kind}.init_std", m)
    if name.endswith("c_proj.weight"):
        # GPT-2: each block adds two branches to the stream, so its variance grows ~2·n_layer
        std /= math.sqrt(2 * n_layer)
    return std


@torch.no_grad()
def init_weights(
    model: GPT, pcfg: ParametrizationConfig, generator: torch.Generator | None = None
) -> None:
    """Initialise every parameter of `model` by the table, in `named_parameters()` order, so
    a seeded `generator` gives the same weights on every run.

    MoE routers are drawn last, after every other parameter: adding a router then leaves the
    draws of the other weights unchanged, so an MoE with one expert gets the dense model's
    weights exactly (tests/test_moe.py)."""
    m = width_multiplier(pcfg, model.config.n_embd)
    kinds = model.parameter_kinds()
    named = sorted(model.named_parameters(), key=lambda item: kinds[item[0]] == "router")
    for name, p in named:
        if kinds[name] == "vector":
            # norm gains start at 1 (a bias, should a variant add one, at 0)
            p.fill_(0.0 if name.endswith("bias") else 1.0)
        else:
            std = init_std(pcfg, name, kinds[name], model.config.n_layer, m)
            torch.nn.init.normal_(p, mean=0.0, std=std, generator=generator)


def param_groups(
    model: GPT, pcfg: ParametrizationConfig, lr: float, weight_decay: float
) -> list[dict]:
    """AdamW parameter groups, one per parameter kind present, in `PARAMETER_KINDS` order.

    Each group has "name" (the kind), "params", "lr" (= lr * lr_mult), "lr_mult" (the table's
    factor, so a schedule sets group["lr"] = base_lr * factor * group["lr_mult"]) and
    "weight_decay" (0 for "vector" params, `weight_decay` for all others: see the module
    docstring for why it is not rescaled under muP).
    """
    m = width_multiplier(pcfg, model.config.n_embd)
    kinds = model.parameter_kinds()
    params = dict(model.named_parameters())
    groups = []
    for kind in PARAMETER_KINDS:
        members = [params[name] for name in params if kinds[name] == kind]
        if not members:
            continue
        lr_mult = _rule(pcfg, f"{kind}.lr", m)
        groups.append(
            {
                "name": kind,
                "params": members,
                "lr": lr * lr_mult,
                "lr_mult": lr_mult,
                "weight_decay": 0.0 if kind == "vector" else weight_decay,
            }
        )
    return groups
