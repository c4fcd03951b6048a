"""Standard parametrization (SP), muP and CompleteP as one table of named rules.

muP (Maximal Update Parametrization; Yang et al., Tensor Programs V, arXiv:2203.03466) scales
init, learning rates and a few multipliers with the width multiplier m = n_embd / base_width so
that a learning rate tuned on a narrow proxy stays optimal as the model widens (Cerebras-GPT,
arXiv:2304.03208; MiniCPM, arXiv:2404.06395). SP here is nanoGPT/GPT-2: a constant init std
and one learning rate for everything. Under SP, m plays no part. CompleteP (Dey et al.,
arXiv:2505.01618) is muP plus rules in the depth multiplier m_d = n_layer / base_depth, so that
the hyperparameters also transfer across depth, which width-only muP does not (docs/completep.md).

Every rule below is either shape-independent or a power of m (`WIDTH_EXPONENTS`, per
parametrization) times, under CompleteP only, a power of m_d (`DEPTH_EXPONENTS`, linear in
alpha), plus `ATTN_SCALE_AUTO`. At m = 1 every width power is 1, so muP and SP coincide whenever
their remaining settings (attn_scale, output_mult, emb_scale, depth_scale) agree; at m_d = 1
every depth power is 1, so CompleteP has muP's init, multipliers and learning rates (its epsilon
and weight decay differ from muP's by their width rules alone); tests check both.

| rule | applies to | SP | muP | CompleteP |
|---|---|---|---|---|
| `embedding.init_std` | `wte`, `wpe` | init_std | init_std | init_std |
| `embedding.lr` | `wte`, `wpe` | lr | lr | lr |
| `emb_scale` | embedding output | emb_scale | emb_scale | emb_scale |
| `hidden.init_std` | matrices in blocks | init_std | init_std / sqrt(m) | init_std / sqrt(m) |
| `residual.init_std` | `c_proj` | / sqrt(2·n_layer) | / sqrt(2·n_layer) | / sqrt(2·base_depth) |
| `hidden.lr` | matrices in blocks | lr | lr / m | lr / m · m_d^(α-1) |
| `router.init_std` | MoE `router` | init_std | init_std / sqrt(m) | init_std / sqrt(m) |
| `router.lr` | MoE `router` | lr | lr / m | lr / m · m_d^(α-1) |
| `readout.init_std` | `lm_head` | init_std | init_std | init_std |
| `readout.lr` | `lm_head` | lr | lr | lr |
| `logits.scale` | logits | output_mult | output_mult / m | output_mult / m |
| `attn_scale` ("auto") | q·k scores | 1/sqrt(d_head) | 1/d_head | 1/d_head |
| `vector` | LayerNorm gains | init 1, lr, no wd | init 1, lr, no wd | init 1, lr·m_d^(α-1), no wd |
| `weight_decay` | all matrices | λ | λ (coupled with lr, see below) | λ / lr_mult (lr·λ fixed) |
| `independent_weight_decay` | all matrices | λ / lr_mult = λ | λ / lr_mult: hidden λ·m | always |
| `residual.mult` | attn and MLP branch outputs | 1 | 1 | × m_d^-α |
| `adam.eps` | AdamW ε, every group | ε | ε | ε / m · m_d^-α |
| `depth_scale` (opt.) | residual branches | × 1/sqrt(n_layer) | × 1/sqrt(n_layer) | (not allowed) |

Why each muP rule (for Adam; Tensor Programs V, Table 3, in its equivalent output-multiplier form):
- hidden init: variance ∝ 1/fan_in keeps pre-activations O(1); init_std is the std at base width.
- hidden lr / m: an Adam update has O(1) entries whatever the gradient scale, and a matrix sums
  fan_in of them, so the per-entry step must shrink like 1/fan_in to move activations by O(1).
- embeddings, positions and norm gains have no width-sized fan_in: init and lr stay fixed.
- MoE router (`model.moe`): its fan_in is the width but its fan_out (n_experts) is not, so
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
scale, ∝ sqrt(lr/λ), shrinks like the init std. The alternative, `independent_weight_decay:
true`, sets each group's λ to λ / lr_mult (hidden matrices and the router λ·m, embeddings and
readout λ), so that lr·λ is width-independent: what microsoft/mup's MuAdamW does and what Wang &
Aitchison, arXiv:2405.13698, argue for, since AdamW's weights are an EMA of updates over a
timescale of 1/(lr·λ) steps, which coupled decay lengthens m-fold in the hidden matrices. It is
CompleteP's weight-decay rule too, by the same code (`_weight_decay_factor`). Off by default, so
that earlier studies keep their runs. Norm gains get no decay.

Why each CompleteP rule (Dey et al., arXiv:2505.01618, Table 1, with alpha = 1 by default;
alpha = 0.5 is Depth-muP, Yang et al. arXiv:2310.02244 / Bordelon et al. arXiv:2309.16620):
- `residual.mult` m_d^-alpha: after a few steps the L blocks' updates to the residual stream
  are correlated, so their sum grows like L; with alpha = 1 each block contributes O(1/L) and
  the sum stays O(1), with every block still learning non-linear features (not "lazy").
- `hidden.lr`, `router.lr` and `vector.lr` times m_d^(alpha-1): with the branch multiplier, an
  Adam step of fixed size moves a block's output by m_d^-alpha; this factor makes the per-block
  change O(1/L) for any alpha (it is 1 at alpha = 1). It applies to every norm gain here, ln_f
  included (EleutherAI/nanoGPT-mup's completep branch leaves ln_f's lr alone; the same at
  alpha = 1).
- `residual.init_std`: GPT-2's 1/sqrt(2·n_layer) on `c_proj` would make the init depend on
  depth on top of the branch multiplier, so CompleteP holds it at the base depth.
- `adam.eps` ε / m · m_d^-alpha: the gradients of hidden weights shrink like 1/m and, through
  the branch multiplier, like m_d^-alpha; ε scaled the same way keeps its share of the
  denominator sqrt(v) + ε fixed instead of letting it swamp small gradients in big models.
- `weight_decay` λ / lr_mult: CompleteP keeps lr·λ (the decay per step, and the EMA timescale
  1/(lr·λ)) fixed as the model grows. torch's AdamW is decoupled (p <- p - lr·λ·p with the
  group's lr), so dividing λ by the group's LR multiplier gives exactly that; hidden matrices
  get λ·m·m_d^(1-alpha), embeddings and the readout λ, norm gains none.
"""

from __future__ import annotations

import math

import torch

from scalinglab.config import ParametrizationConfig
from scalinglab.errors import UserError
from scalinglab.model.gpt import GPT, PARAMETER_KINDS

ADAM_EPS = 1e-8
"""AdamW's epsilon at base width and depth: torch's default, which training uses."""

# The table: the power of the width multiplier m each rule is scaled by, per parametrization.
# CompleteP's width rules are muP's, plus its epsilon (arXiv:2505.01618, Table 1).
WIDTH_EXPONENTS: dict[str, dict[str, float]] = {
    "embedding.init_std": {"sp": 0.0, "mup": 0.0, "completep": 0.0},
    "embedding.lr": {"sp": 0.0, "mup": 0.0, "completep": 0.0},
    "position.init_std": {"sp": 0.0, "mup": 0.0, "completep": 0.0},
    "position.lr": {"sp": 0.0, "mup": 0.0, "completep": 0.0},
    "hidden.init_std": {"sp": 0.0, "mup": -0.5, "completep": -0.5},
    "hidden.lr": {"sp": 0.0, "mup": -1.0, "completep": -1.0},
    "router.init_std": {"sp": 0.0, "mup": -0.5, "completep": -0.5},
    "router.lr": {"sp": 0.0, "mup": -1.0, "completep": -1.0},
    "readout.init_std": {"sp": 0.0, "mup": 0.0, "completep": 0.0},
    "readout.lr": {"sp": 0.0, "mup": 0.0, "completep": 0.0},
    "vector.lr": {"sp": 0.0, "mup": 0.0, "completep": 0.0},
    "logits.scale": {"sp": 0.0, "mup": -1.0, "completep": -1.0},
    "adam.eps": {"sp": 0.0, "mup": 0.0, "completep": -1.0},
}
# CompleteP's depth rules (arXiv:2505.01618, Table 1): the power of the depth multiplier
# m_d = n_layer / base_depth, as (constant, coefficient of alpha). SP and muP have none.
DEPTH_EXPONENTS: dict[str, tuple[float, float]] = {
    "residual.mult": (0.0, -1.0),  # m_d^-alpha on each block's attention and MLP branch
    "hidden.lr": (-1.0, 1.0),  # m_d^(alpha - 1)
    "router.lr": (-1.0, 1.0),  # a hidden matrix (see the module docstring)
    "vector.lr": (-1.0, 1.0),  # norm gains: m_d^(alpha - 1)
    "adam.eps": (0.0, -1.0),  # m_d^-alpha
}
# What attn_scale="auto" means under each: q.k / sqrt(d_head) or q.k / d_head.
ATTN_SCALE_AUTO = {"sp": "sqrt", "mup": "linear", "completep": "linear"}


def width_multiplier(pcfg: ParametrizationConfig, n_embd: int) -> float:
    """m = n_embd / base_width under muP and CompleteP; 1 under SP (where base_width plays no
    part)."""
    if pcfg.name == "sp":
        return 1.0
    if n_embd < pcfg.base_width:
        label = "muP" if pcfg.name == "mup" else "CompleteP"
        raise UserError(
            f"parametrization.base_width: {label} needs n_embd >= base_width, "
            f"got n_embd={n_embd} < base_width={pcfg.base_width}"
        )
    return n_embd / pcfg.base_width


def depth_multiplier(pcfg: ParametrizationConfig, n_layer: int) -> float:
    """m_d = n_layer / base_depth under CompleteP; 1 under SP and muP."""
    if pcfg.name != "completep":
        return 1.0
    if n_layer < pcfg.base_depth:
        # base_depth is the proxy's depth, where the LR is tuned: the rules scale up from it
        raise UserError(f"parametrization.base_depth: CompleteP needs n_layer >= base_depth, "
                        f"got n_layer={n_layer} < base_depth={pcfg.base_depth}")
    return n_layer / pcfg.base_depth


def _rule(pcfg: ParametrizationConfig, rule: str, m: float, m_d: float = 1.0) -> float:
    """The factor a table rule applies at width multiplier m and depth multiplier m_d."""
    factor = m ** WIDTH_EXPONENTS[rule][pcfg.name] if rule in WIDTH_EXPONENTS else 1.0
    if pcfg.name == "completep" and rule in DEPTH_EXPONENTS:
        const, per_alpha = DEPTH_EXPONENTS[rule]
        factor *= m_d ** (const + per_alpha * pcfg.alpha)
    return factor


def rule_factors(pcfg: ParametrizationConfig, n_layer: int, n_embd: int) -> dict[str, float]:
    """Every rule's factor at this shape, by rule name, and the weight-decay factor of each
    optimizer group ("<kind>.weight_decay"): the table evaluated, to print and to test."""
    m, m_d = width_multiplier(pcfg, n_embd), depth_multiplier(pcfg, n_layer)
    out = {rule: _rule(pcfg, rule, m, m_d) for rule in dict.fromkeys(
        [*WIDTH_EXPONENTS, *DEPTH_EXPONENTS])}
    for kind in PARAMETER_KINDS:
        out[f"{kind}.weight_decay"] = _weight_decay_factor(pcfg, kind, m, m_d)
    return out


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
        "residual_scale": _residual_scale(pcfg, n_layer),
    }


def _residual_scale(pcfg: ParametrizationConfig, n_layer: int) -> float:
    if pcfg.name == "completep":
        # m_d^-alpha: L blocks' correlated updates then add up to O(1) at any depth
        return _rule(pcfg, "residual.mult", 1.0, depth_multiplier(pcfg, n_layer))
    return 1.0 / math.sqrt(n_layer) if pcfg.depth_scale else 1.0


def init_std(pcfg: ParametrizationConfig, name: str, kind: str, n_layer: int, m: float) -> float:
    """The init std of one weight matrix (not used for "vector" params, which start at 1)."""
    std = pcfg.init_std * _rule(pcfg, f"{kind}.init_std", m)
    if name.endswith("c_proj.weight"):
        # GPT-2: each block adds two branches to the stream, so its variance grows ~2·n_layer.
        # CompleteP holds this factor at the base depth: the m_d^-alpha branch multiplier is its
        # one depth rule for the forward pass, so no init depends on depth (arXiv:2505.01618)
        depth = pcfg.base_depth if pcfg.name == "completep" else n_layer
        std /= math.sqrt(2 * depth)
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


def _weight_decay_factor(pcfg: ParametrizationConfig, kind: str, m: float, m_d: float) -> float:
    """The factor on `weight_decay` in one parameter kind's group."""
    if kind == "vector":
        return 0.0  # norm gains are not decayed
    if pcfg.name != "completep" and not pcfg.independent_weight_decay:
        return 1.0  # coupled: see the module docstring
    # Independent decay keeps eta * lambda constant: CompleteP's rule (arXiv:2505.01618, Table
    # 1) and muP's option (arXiv:2405.13698). torch's AdamW decays decoupled,
    # p <- p - lr * weight_decay * p with the group's lr, so the decay it applies is
    # lr * weight_decay: dividing weight_decay by the group's LR multiplier holds it fixed.
    return 1.0 / _rule(pcfg, f"{kind}.lr", m, m_d)


def param_groups(
    model: GPT, pcfg: ParametrizationConfig, lr: float, weight_decay: float,
    eps: float = ADAM_EPS,
) -> list[dict]:
    """AdamW parameter groups, one per parameter kind present, in `PARAMETER_KINDS` order.

    Each group has "name" (the kind), "params", "lr" (= lr * lr_mult), "lr_mult" (the table's
    factor, so a schedule sets group["lr"] = base_lr * factor * group["lr_mult"]),
    "weight_decay" (0 for "vector" params; for all others `weight_decay` under SP and muP, see
    the module docstring for why it is not rescaled, and `weight_decay` / lr_mult under
    CompleteP and under muP with `independent_weight_decay`) and "eps" (`eps` times the
    "adam.eps" rule: `eps` itself under SP and muP).
    """
    m = width_multiplier(pcfg, model.config.n_embd)
    m_d = depth_multiplier(pcfg, model.config.n_layer)
    kinds = model.parameter_kinds()
    params = dict(model.named_parameters())
    groups = []
    for kind in PARAMETER_KINDS:
        members = [params[name] for name in params if kinds[name] == kind]
        if not members:
            continue
        lr_mult = _rule(pcfg, f"{kind}.lr", m, m_d)
        groups.append(
            {
                "name": kind,
                "params": members,
                "lr": lr * lr_mult,
                "lr_mult": lr_mult,
                "weight_decay": weight_decay * _weight_decay_factor(pcfg, kind, m, m_d),
                "eps": eps * _rule(pcfg, "adam.eps", m, m_d),
            }
        )
    return groups
