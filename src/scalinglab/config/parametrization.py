"""The ``parametrization`` section: SP, muP or CompleteP and their width- and depth-independent
settings (`scalinglab.model.parametrization` holds the rules).

`__post_init__` checks every key (``own_check``), so that a config built in code is checked as
one read from YAML is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scalinglab.errors import UserError

PARAMETRIZATIONS = ("sp", "mup", "completep")
ATTN_SCALES = ("auto", "sqrt", "linear")
ALPHA_RANGE = (0.5, 1.0)
"""CompleteP's depth exponent: 1 is CompleteP, 0.5 Depth-muP (arXiv:2505.01618)."""


def _checked(doc: str, **bounds) -> dict:
    return {"doc": doc, **bounds, "own_check": True}


@dataclass(frozen=True)
class ParametrizationConfig:
    """Which parametrization, and its width-independent settings."""

    name: str = field(
        default="sp",
        metadata=_checked(
            "standard (sp), maximal-update (mup) or CompleteP (completep: muP plus depth rules, "
            "arXiv:2505.01618; docs/completep.md) parametrization of the IsoFLOP, "
            "hyperparameter, critical-batch, WSD-vs-cosine and validation phases; lr_transfer "
            "sweeps its own lr_transfer.parametrizations and each variant may set its own (the "
            "parametrization key of a variants.models entry); the other keys of this section "
            "apply to every phase", choices=PARAMETRIZATIONS),
    )
    base_width: int = field(
        default=64,
        metadata=_checked("muP width multiplier m = n_embd / base_width", min=0, exclusive=True),
    )
    init_std: float = field(
        default=0.02,
        metadata=_checked("std of hidden weights at the base width", min=0, exclusive=True),
    )
    emb_scale: float = field(
        default=1.0,
        metadata=_checked("multiplier on the embedding output (MiniCPM scale_emb)", min=0,
                          exclusive=True),
    )
    output_mult: float = field(
        default=1.0,
        metadata=_checked("logit multiplier at the base width (muP divides it by m)", min=0,
                          exclusive=True),
    )
    attn_scale: str = field(
        default="auto",
        metadata=_checked("softmax scale: auto (1/sqrt(d_head) SP, 1/d_head muP), sqrt or linear",
                          choices=ATTN_SCALES),
    )
    depth_scale: bool = field(
        default=False,
        metadata=_checked("scale residual branches by 1/sqrt(n_layer) (MiniCPM scale_depth)"),
    )
    base_depth: int = field(
        default=2,
        metadata=_checked("CompleteP depth multiplier m_d = n_layer / base_depth, base_depth "
                          "being the depth the hyperparameters are tuned at", min=0,
                          exclusive=True),
    )
    alpha: float = field(
        default=1.0,
        metadata=_checked("CompleteP depth exponent: residual branches times m_d^-alpha (1 "
                          "CompleteP, 0.5 Depth-muP)", min=ALPHA_RANGE[0], max=ALPHA_RANGE[1]),
    )
    independent_weight_decay: bool = field(
        default=False,
        metadata=_checked("muP: scale each group's AdamW weight decay by 1 / its LR multiplier "
                          "(hidden matrices lambda * m), so that lr * lambda stays constant with "
                          "width (Wang & Aitchison, arXiv:2405.13698); false keeps lambda coupled "
                          "(the same in every group). CompleteP always keeps lr * lambda "
                          "constant; SP's multipliers are 1, so it changes nothing there"),
    )

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
        if (isinstance(self.base_depth, bool) or not isinstance(self.base_depth, int)
                or self.base_depth <= 0):
            raise UserError(
                f"parametrization.base_depth: must be a positive integer, got {self.base_depth!r}"
            )
        low, high = ALPHA_RANGE
        if (isinstance(self.alpha, bool) or not isinstance(self.alpha, int | float)
                or not low <= self.alpha <= high):
            raise UserError(f"parametrization.alpha: must be in [{low:g}, {high:g}] "
                            f"(arXiv:2505.01618), got {self.alpha!r}")
        if not isinstance(self.independent_weight_decay, bool):
            raise UserError("parametrization.independent_weight_decay: must be true or false, "
                            f"got {self.independent_weight_decay!r}")
        if self.name == "completep" and self.depth_scale:
            raise UserError("parametrization.depth_scale: CompleteP scales residual branches by "
                            "m_d^-alpha itself; set depth_scale: false")
