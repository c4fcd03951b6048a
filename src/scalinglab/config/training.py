"""The ``training`` section: the optimizer, evaluations, checkpoints and the device."""

from __future__ import annotations

from dataclasses import dataclass, field

from scalinglab.config.fields import positive

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TrainingConfig:
    batch_size: int = field(default=16, metadata=positive("sequences per optimizer step"))
    lr: float = field(default=3e-3, metadata=positive("peak learning rate"))
    weight_decay: float = field(
        default=0.1, metadata={"doc": "AdamW decoupled weight decay (not on norms)", "min": 0}
    )
    beta1: float = field(default=0.9, metadata={"doc": "AdamW beta1", "min": 0, "max": 1})
    beta2: float = field(default=0.95, metadata={"doc": "AdamW beta2", "min": 0, "max": 1})
    grad_clip: float = field(
        default=1.0,
        metadata={"doc": "max global gradient norm (0 turns clipping off)", "min": 0},
    )
    warmup_tokens: int = field(
        default=40960, metadata={"doc": "linear warmup length in tokens", "min": 0}
    )
    eval_every: int = field(
        default=50, metadata=positive("optimizer steps between validation evaluations")
    )
    eval_tokens: int = field(default=65536, metadata=positive("validation tokens per evaluation"))
    checkpoint_every: int = field(
        default=500, metadata=positive("optimizer steps between resume checkpoints")
    )
    device: str = field(
        default="auto",
        metadata={"doc": "auto (CUDA with bf16 when present, else CPU fp32), cpu or cuda",
                  "choices": DEVICES},
    )
    compile: bool = field(
        default=False,
        metadata={"doc": "wrap the model in torch.compile (worth it on a GPU for long runs)"},
    )
    tracking: tuple[str, ...] = field(
        default=(),
        metadata={"doc": "live trackers per run: tensorboard (<run>/tensorboard/), wandb "
                         "(offline, <run>/wandb/); docs/monitoring.md",
                  "choices": ("tensorboard", "wandb")},
    )
