"""The ``model`` section: the context, the MLP ratio and the size ladder; and the architecture
choices a variant may make (`scalinglab.model.gpt` builds them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from scalinglab.config.fields import positive

ATTENTIONS = ("softmax", "linear")
FEATURE_MAPS = ("elu", "relu")
"""Kernels of linear attention (`scalinglab.model.linear_attention`)."""
MLPS = ("dense", "moe")


@dataclass(frozen=True)
class SizeConfig:
    """One model size: a rung of a ladder (`model.sizes`, `variants.sizes`,
    `wsd_vs_cosine.sizes`)."""

    n_layer: int = field(metadata=positive("number of blocks"))
    n_embd: int = field(metadata=positive("residual width"))
    n_head: int = field(metadata=positive("heads; divides n_embd"))


@dataclass(frozen=True)
class ModelConfig:
    block_size: int = field(default=128, metadata=positive("context length in tokens"))
    mlp_ratio: int = field(default=4, metadata=positive("MLP hidden width as a multiple of n_embd"))
    sizes: tuple[SizeConfig, ...] = field(
        default=(), metadata={"doc": "the size ladder", "min_len": 1}
    )
