"""The study configuration: frozen dataclasses built from YAML by one `from_dict`.

`from_dict` names the bad key of any mistake (`training.lr: must be > 0`), so a user never sees a
traceback for a typo. The JSON schema in `workflow/schemas/config.schema.yaml` documents the same
keys with the same defaults; a test keeps the two in step.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scalinglab.corpus import CorpusConfig
from scalinglab.critical_batch import CriticalBatchConfig
from scalinglab.distributed import check_batch
from scalinglab.downstream import DownstreamConfig, check_block_size
from scalinglab.errors import UserError
from scalinglab.hparams import HparamsConfig
from scalinglab.lr_transfer import LrTransferConfig
from scalinglab.parametrization import ParametrizationConfig
from scalinglab.recipe import ValidationConfig
from scalinglab.tokenizer import MIN_VOCAB
from scalinglab.variants import VariantsConfig
from scalinglab.wsd_vs_cosine import WsdVsCosineConfig


def _positive(doc: str) -> dict:
    return {"doc": doc, "min": 0, "exclusive": True}


@dataclass(frozen=True)
class TokenizerConfig:
    vocab_size: int = field(
        default=2048,
        metadata={"doc": "BPE vocabulary size", "min": MIN_VOCAB,
                  "why": "byte-level BPE needs the 256 byte tokens and <|endoftext|>"},
    )


@dataclass(frozen=True)
class SizeConfig:
    """One model size of the ladder."""

    n_layer: int = field(metadata=_positive("number of transformer blocks"))
    n_embd: int = field(metadata=_positive("residual stream width"))
    n_head: int = field(metadata=_positive("attention heads; must divide n_embd"))


@dataclass(frozen=True)
class ModelConfig:
    block_size: int = field(default=128, metadata=_positive("context length in tokens"))
    mlp_ratio: int = field(default=4, metadata=_positive("MLP hidden width / n_embd"))
    sizes: tuple[SizeConfig, ...] = field(
        default=(), metadata={"doc": "the size ladder", "min_len": 1}
    )


@dataclass(frozen=True)
class TrainingConfig:
    batch_size: int = field(default=16, metadata=_positive("sequences per optimizer step"))
    lr: float = field(default=3e-3, metadata=_positive("peak learning rate"))
    weight_decay: float = field(
        default=0.1, metadata={"doc": "AdamW decoupled weight decay", "min": 0}
    )
    beta1: float = field(default=0.9, metadata={"doc": "AdamW beta1", "min": 0, "max": 1})
    beta2: float = field(default=0.95, metadata={"doc": "AdamW beta2", "min": 0, "max": 1})
    grad_clip: float = field(
        default=1.0, metadata={"doc": "max global grad norm; 0 = off", "min": 0}
    )
    warmup_tokens: int = field(default=40960, metadata={"doc": "linear warmup length", "min": 0})
    eval_every: int = field(default=50, metadata=_positive("steps between validation evals"))
    eval_tokens: int = field(default=65536, metadata=_positive("validation tokens per eval"))
    checkpoint_every: int = field(
        default=500, metadata=_positive("steps between resume checkpoints")
    )
    device: str = field(
        default="auto", metadata={"doc": "auto | cpu | cuda", "choices": ("auto", "cpu", "cuda")}
    )
    compile: bool = field(default=False, metadata={"doc": "wrap the model in torch.compile"})
    tracking: tuple[str, ...] = field(
        default=(),
        metadata={"doc": "live trackers per run: tensorboard (<run>/tensorboard/), wandb "
                         "(offline, <run>/wandb/); docs/monitoring.md",
                  "choices": ("tensorboard", "wandb")},
    )


@dataclass(frozen=True)
class ScheduleConfig:
    kind: str = field(
        default="wsd", metadata={"doc": "wsd | cosine", "choices": ("wsd", "cosine")}
    )
    decay_fraction: float = field(
        default=0.2, metadata={"doc": "share of each branch's steps spent decaying", "min": 0,
                                "exclusive": True, "max": 1}
    )
    decay_shape: str = field(
        default="linear",
        metadata={"doc": "WSD decay shape",
                  "choices": ("linear", "cosine", "1-sqrt", "exponential", "multistep")},
    )
    final_lr_ratio: float = field(
        default=0.0, metadata={"doc": "lr at the end of the decay / peak lr", "min": 0, "max": 1}
    )


@dataclass(frozen=True)
class FlopsConfig:
    convention: str = field(
        default="6N+attn+head",
        metadata={"doc": "FLOPs per token", "choices": ("6N", "6N+attn", "6N+attn+head")},
    )


@dataclass(frozen=True)
class IsoflopConfig:
    budgets: tuple[float, ...] = field(
        default=(), metadata={"doc": "compute budgets C in FLOPs", "min": 0, "exclusive": True,
                              "min_len": 1}
    )
    min_steps: int = field(
        default=20, metadata=_positive("a (size, budget) run with fewer steps is left out")
    )
    max_epochs: float = field(
        default=4.0, metadata=_positive("most passes over the training tokens any run may make")
    )
    max_tokens_per_param: float = field(
        default=0.0,
        metadata={"doc": "leave out runs with more tokens per parameter (0: no limit)", "min": 0},
    )


@dataclass(frozen=True)
class PaperConfig:
    epoch_csv: str | None = field(
        default=None,
        metadata={"doc": "your copy of Epoch AI's Chinchilla points (not shipped: no licence)"},
    )


@dataclass(frozen=True)
class ResourcesConfig:
    """Hardware, not study: only how a job runs (its runtime on a cluster, its processes)
    depends on it (set it per machine, e.g. in a profile's `config:` or with `--config`)."""

    flops_per_second: float = field(
        default=2e9, metadata=_positive("sustained training FLOP/s of one job (CPU ~2e9)")
    )
    runtime_margin: float = field(
        default=3.0, metadata=_positive("runtime = margin x FLOPs / flops_per_second")
    )
    gpus_per_run: int = field(
        default=1,
        metadata=_positive("data-parallel processes per training job (torchrun + DDP); GPUs "
                           "on CUDA, each job asks for this many; must divide batch_size"),
    )


@dataclass(frozen=True)
class StudyConfig:
    seed: int = field(default=0, metadata={"doc": "seed for data order, init and the val split"})
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    parametrization: ParametrizationConfig = field(default_factory=ParametrizationConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    flops: FlopsConfig = field(default_factory=FlopsConfig)
    isoflop: IsoflopConfig = field(default_factory=IsoflopConfig)
    paper: PaperConfig = field(default_factory=PaperConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    lr_transfer: LrTransferConfig = field(default_factory=LrTransferConfig)
    variants: VariantsConfig = field(default_factory=VariantsConfig)
    hparams: HparamsConfig = field(default_factory=HparamsConfig)
    critical_batch: CriticalBatchConfig = field(default_factory=CriticalBatchConfig)
    wsd_vs_cosine: WsdVsCosineConfig = field(default_factory=WsdVsCosineConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    downstream: DownstreamConfig = field(default_factory=DownstreamConfig)

    def __post_init__(self) -> None:
        # the IsoFLOP and variants training jobs split each step's batch over their processes
        check_batch(self.training.batch_size, self.resources.gpus_per_run)
        check_block_size(self.downstream, self.model.block_size)


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass `cls` from a plain dict, naming the key of the first mistake found."""
    where = prefix or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserError(f"unknown config key '{_join(prefix, unknown[0])}'")
    kwargs = {}
    for name, f in fields.items():
        key = _join(prefix, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise UserError(f"missing config key '{key}'")
            continue
        kwargs[name] = _convert(hints[name], data[name], key, f.metadata)
    return cls(**kwargs)


def _convert(hint: Any, value: Any, key: str, meta: Any) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, key)
    origin = typing.get_origin(hint)
    if origin is tuple:
        if isinstance(value, (str, dict)) or not hasattr(value, "__iter__"):
            raise UserError(f"{key}: expected a list")
        (item_hint, _ellipsis) = typing.get_args(hint)
        items = tuple(_convert(item_hint, v, f"{key}[{i}]", meta) for i, v in enumerate(value))
        if len(items) < meta.get("min_len", 0):
            raise UserError(f"{key}: needs at least {meta['min_len']} entr(y/ies)")
        return items
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, key, meta)
    return _check_scalar(hint, value, key, meta)


def _check_scalar(hint: Any, value: Any, key: str, meta: Any) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise UserError(f"{key}: expected an integer, got {value!r}")
        value = int(value)
    elif hint is float:
        # YAML reads "3e-3" (no dot) as a string; accept any number written as text.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise UserError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{key}: expected a number, got {value!r}")
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise UserError(f"{key}: expected a finite number, got {value!r}")
    elif hint is str:
        if not isinstance(value, str):
            raise UserError(f"{key}: expected a string, got {value!r}")
    if "choices" in meta and value not in meta["choices"]:
        raise UserError(f"{key}: {value!r} is not one of {', '.join(meta['choices'])}")
    if "min" in meta:
        low = meta["min"]
        if value < low or (meta.get("exclusive") and value == low):
            op = ">" if meta.get("exclusive") else ">="
            why = f" ({meta['why']})" if "why" in meta else ""
            raise UserError(f"{key}: must be {op} {low}{why}, got {value!r}")
    if "max" in meta and value > meta["max"]:
        raise UserError(f"{key}: must be <= {meta['max']}, got {value!r}")
    return value


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def load_config(path: str | Path) -> StudyConfig:
    """Read a YAML study config; a missing or malformed file is a UserError naming it."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({err})".replace("\n", " ")) from None
    return from_dict(StudyConfig, data or {})


def to_dict(cfg: Any) -> dict:
    """The resolved config as plain data (tuples become lists), for specs and provenance."""
    return _plain(dataclasses.asdict(cfg))


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
