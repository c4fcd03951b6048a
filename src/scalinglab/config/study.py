"""The study configuration: frozen dataclasses, one per section, built from YAML by `from_dict`.

`from_dict` names the bad key of any mistake (`training.lr: must be > 0`), so a user never sees a
traceback for a typo. It checks each key against its field's type and metadata
(`scalinglab.config.fields`), the same declarations that `scalinglab.config.schema` renders into
`workflow/schemas/config.schema.yaml`; each section's `__post_init__` adds the checks within the
section, and `StudyConfig.__post_init__` those across sections.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scalinglab.config.adaptive import AdaptiveConfig
from scalinglab.config.corpus import CorpusConfig
from scalinglab.config.critical_batch import CriticalBatchConfig
from scalinglab.config.depth_transfer import DepthTransferConfig
from scalinglab.config.downstream import DownstreamConfig, check_block_size
from scalinglab.config.flops import FlopsConfig
from scalinglab.config.hparams import HparamsConfig
from scalinglab.config.isoflop import IsoflopConfig
from scalinglab.config.lr_transfer import LrTransferConfig
from scalinglab.config.model import ModelConfig
from scalinglab.config.paper import PaperConfig
from scalinglab.config.parametrization import ParametrizationConfig
from scalinglab.config.resources import ResourcesConfig, check_batch
from scalinglab.config.schedule import ScheduleConfig
from scalinglab.config.tokenizer import TokenizerConfig
from scalinglab.config.training import TrainingConfig
from scalinglab.config.validation import ValidationConfig
from scalinglab.config.variants import VariantsConfig
from scalinglab.config.wsd_vs_cosine import WsdVsCosineConfig
from scalinglab.errors import UserError


def _section(cls: type, doc: str | None = None) -> Any:
    return field(default_factory=cls, metadata={"doc": doc} if doc else {})


@dataclass(frozen=True)
class StudyConfig:
    """The scalinglab study config: every key with its type, description and default."""

    seed: int = field(
        default=0,
        metadata={"doc": "seed for the validation split, the data order and the initialisation"},
    )
    corpus: CorpusConfig = _section(CorpusConfig, "the text the models are trained on")
    tokenizer: TokenizerConfig = _section(TokenizerConfig)
    model: ModelConfig = _section(ModelConfig)
    parametrization: ParametrizationConfig = _section(ParametrizationConfig)
    training: TrainingConfig = _section(TrainingConfig)
    schedule: ScheduleConfig = _section(ScheduleConfig)
    flops: FlopsConfig = _section(FlopsConfig)
    isoflop: IsoflopConfig = _section(IsoflopConfig)
    adaptive: AdaptiveConfig = _section(
        AdaptiveConfig,
        "the predict-train-adjust loop (phases.isoflop_rounds): after each fit, a checkpoint "
        "plans extra sizes where a budget's minimum is at an edge or its N_opt interval is "
        "wide, and the seeds of the noise floor")
    paper: PaperConfig = _section(PaperConfig)
    resources: ResourcesConfig = _section(
        ResourcesConfig,
        "hardware, not study; the runtime and the processes (GPUs) of each training job")
    lr_transfer: LrTransferConfig = _section(
        LrTransferConfig,
        "the learning-rate transfer phase (scalinglab.phases.lr_transfer): widths x lrs x "
        "parametrizations x seeds, every run on the same token count; best LR per width and "
        "its slope against width")
    depth_transfer: DepthTransferConfig = _section(
        DepthTransferConfig,
        "the learning-rate transfer across depth (scalinglab.phases.depth_transfer): depths x "
        "lrs x {mup, completep} x seeds at one width, every run on the same token count; best "
        "LR per depth, its slope against depth and its drift in grid steps (arXiv:2505.01618)")
    variants: VariantsConfig = _section(
        VariantsConfig,
        "the variants phase (phases.variants): every variant in `models` (an architecture, "
        "a parametrization, a peak LR) trains the ladder `sizes` on the budgets `budgets` like "
        "the base IsoFLOP phase; Method 1 and 2 laws per variant against active parameters, "
        "each frontier's loss-compute law, and a comparison with the reference variant")
    hparams: HparamsConfig = _section(
        HparamsConfig,
        "the LR x batch sweep (phases.hparams, DeepSeek LLM arXiv:2401.02954 Sec. 3.1): at "
        "each budget, the ladder size closest to `tokens_per_param` trains every (lr, batch); "
        "eta_opt(C), B_opt(C) and the same against N are fitted through the near-optimal runs")
    critical_batch: CriticalBatchConfig = _section(
        CriticalBatchConfig,
        "the critical batch against loss (phases.critical_batch, MiniCPM arXiv:2404.06395 "
        "Sec. 4.2): every batch size trains one model at a constant LR for the same number of "
        "steps; at each target loss the batch reaching it with the fewest tokens; "
        "bs_opt = k / L^gamma")
    wsd_vs_cosine: WsdVsCosineConfig = _section(
        WsdVsCosineConfig,
        "WSD with rewind-decay branches against cosine runs tuned to each budget "
        "(phases.wsd_vs_cosine; MiniCPM arXiv:2404.06395, Hägele et al. arXiv:2405.18392), "
        "with decay-fraction and decay-shape ablations")
    validation: ValidationConfig = _section(
        ValidationConfig,
        "the recipe (results/recipe.json) and one validation run at compute_factor x the "
        "largest budget any fit used, configured from the recipe (scalinglab.phases.recipe)")
    downstream: DownstreamConfig = _section(
        DownstreamConfig,
        "downstream accuracy beyond loss (training.downstream, LLaMA 3 arXiv:2407.21783 Sec. "
        "3.2.1): a multiple-choice continuation task built from val.bin, the IsoFLOP branches "
        "and the validation run scored on it, and a sigmoid from validation loss to accuracy "
        "that predicts the recipe's accuracy")

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
    if meta.get("own_check"):
        return value  # the section's own code checks the value, in its own words
    if "choices" in meta and value not in meta["choices"]:
        raise UserError(f"{key}: {value!r} is not one of {', '.join(meta['choices'])}")
    if "min" in meta:
        low = meta["min"]
        if value < low or (meta.get("exclusive") and value == low):
            op = ">" if meta.get("exclusive") else ">="
            why = f" ({meta['why']})" if "why" in meta else ""
            raise UserError(f"{key}: must be {op} {low}{why}, got {value!r}")
    if "max" in meta:
        high = meta["max"]
        if value > high or (meta.get("exclusive_max") and value == high):
            op = "<" if meta.get("exclusive_max") else "<="
            raise UserError(f"{key}: must be {op} {high}, got {value!r}")
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
