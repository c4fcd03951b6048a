"""The ``variants`` section: architectures trained and fitted like the base phase
(`scalinglab.phases.variants`)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from scalinglab.config.fields import check_heads, positive
from scalinglab.config.model import ATTENTIONS, FEATURE_MAPS, MLPS, SizeConfig
from scalinglab.config.parametrization import PARAMETRIZATIONS
from scalinglab.errors import UserError

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*$")
"""A variant's name: it starts series ids, so no separator may appear in it."""
PHASE_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
# The variant settings that are GPTConfig fields, and those that set how the runs train (kept in
# the run's spec as `parametrization.name` and `training.lr`, and in runs.csv as their columns).
MODEL_SETTINGS = ("attention", "feature_map", "mlp", "n_experts", "moe_top_k", "moe_aux_coef")
RUN_SETTINGS = ("parametrization", "lr")
SETTINGS = (*MODEL_SETTINGS, *RUN_SETTINGS)
# Names the other phases' outputs already use (results/<x>/, results/fits/<x>.json,
# results/figures/<x>.png, results/runs/<x>/, results/specs/<x>/): `variants.name` may not take
# them (a test scans the rule files for new ones). "mup" is results/muP on a case-blind disk.
RESERVED_NAMES = (
    "benchmarks", "compute_optimal", "coord_check", "corpus", "critical_batch", "data",
    "depth_transfer", "downstream", "figures", "fits", "gpu", "hparams", "isoflop",
    "isoflop_intervals", "isoflop_r", "logs", "loss_curves", "lr_transfer", "metrics", "mup",
    "paper", "prediction", "recipe", "runs", "schedule_law", "series", "specs", "study",
    "validation", "wsd_vs_cosine",
)


@dataclass(frozen=True)
class VariantConfig:
    """One architecture: a name and the `GPTConfig` settings that make it."""

    name: str = field(
        metadata={"doc": "id of the variant (lower-case letters and digits)",
                  "pattern": NAME_PATTERN.pattern},
    )
    attention: str = field(
        default="softmax",
        metadata={"doc": "softmax (SDPA) or linear (chunked causal linear attention)",
                  "choices": ATTENTIONS},
    )
    feature_map: str = field(
        default="elu",
        metadata={"doc": "linear attention kernel: elu (elu + 1) or relu",
                  "choices": FEATURE_MAPS},
    )
    mlp: str = field(
        default="dense",
        metadata={"doc": "dense (one GELU MLP) or moe (top-k routed experts)", "choices": MLPS},
    )
    n_experts: int = field(default=1, metadata=positive("experts per MoE layer"))
    moe_top_k: int = field(
        default=1, metadata=positive("experts each token is routed to (at most n_experts)")
    )
    moe_aux_coef: float = field(
        default=0.01,
        metadata={"doc": "weight of the load-balancing loss in the training loss", "min": 0},
    )
    parametrization: str | None = field(
        default=None,
        metadata={"doc": "sp, mup or completep for this variant's runs (the rest of "
                         "`parametrization` is shared; muP needs every ladder width a whole "
                         "multiple of parametrization.base_width); null means the study's "
                         "parametrization.name", "choices": PARAMETRIZATIONS},
    )
    lr: float | None = field(
        default=None,
        metadata=positive("this variant's peak learning rate; null means training.lr"),
    )

    def configured(self) -> dict:
        """The variant as written in the config: settings left unset (null) are not listed, so
        that a variant without overrides keeps the spec, hence the runs, it had before they
        existed. What its runs use is in the spec's `parametrization` and `training`."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if not (k in RUN_SETTINGS and v is None)}


@dataclass(frozen=True)
class VariantsConfig:
    """The architecture-variants phase (off unless `enabled`)."""

    enabled: bool = field(default=False, metadata={"doc": "run the variants phase"})
    name: str = field(
        default="variants",
        metadata={"doc": "names the phase's outputs: results/fits/NAME.json, "
                         "results/figures/NAME.png (the frontier laws and their residuals), "
                         "NAME_envelope.png, NAME_isoflop.png, tables under results/NAME/, runs "
                         "under results/runs/NAME/ (sp_vs_mup.yaml: sp_vs_mup); not a name "
                         "another phase's outputs use", "pattern": PHASE_NAME_PATTERN.pattern},
    )
    reference: str | None = field(
        default=None,
        metadata={"doc": "the variant every other one is compared with (loss gap, exponent "
                         "difference); null means dense if listed, else the first variant by "
                         "name"},
    )
    models: tuple[VariantConfig, ...] = field(
        default=(),
        metadata={"doc": "the variants compared, each a name plus model settings and, "
                         "optionally, its own parametrization (sp, mup) and peak lr"},
    )
    sizes: tuple[SizeConfig, ...] = field(
        default=(),
        metadata={"doc": "the ladder of every variant (empty means model.sizes)", "unique": True},
    )
    budgets: tuple[float, ...] = field(
        default=(),
        metadata=positive("compute budgets C in FLOPs (empty means isoflop.budgets)",
                          unique=True),
    )

    def __post_init__(self) -> None:
        # checks within the section; those against other sections are in
        # `scalinglab.phases.variants.plan`
        if not PHASE_NAME_PATTERN.match(self.name):
            raise UserError(f"variants.name: {self.name!r} must be lower-case letters, digits "
                            "and _, starting with a letter")
        # isoflop_r1, isoflop_r2, ...: the IsoFLOP refinement rounds' runs and specs
        if self.name in RESERVED_NAMES or re.fullmatch(r"isoflop_r\d+", self.name):
            raise UserError(f"variants.name: {self.name!r} is taken by another phase's outputs "
                            f"(results/{self.name}...); choose another name")
        names = [m.name for m in self.models]
        if self.reference is not None and self.reference not in names:
            raise UserError(f"variants.reference: {self.reference!r} is not a variant of "
                            f"variants.models ({', '.join(names) or 'none listed'})")
        for i, model in enumerate(self.models):
            key = f"variants.models[{i}]"
            if not NAME_PATTERN.match(model.name):
                raise UserError(f"{key}.name: {model.name!r} must be lower-case letters and "
                                "digits, starting with a letter")
            if names.index(model.name) != i:
                raise UserError(f"{key}.name: {model.name!r} is listed twice")
            if model.moe_top_k > model.n_experts:
                raise UserError(f"{key}.moe_top_k: {model.moe_top_k} is more than "
                                f"n_experts={model.n_experts}")
            # from_dict checks these already; a VariantConfig built in code is checked here
            if model.parametrization not in (None, *PARAMETRIZATIONS):
                raise UserError(f"{key}.parametrization: {model.parametrization!r} is not one "
                                f"of {', '.join(PARAMETRIZATIONS)}")
            if model.lr is not None and not model.lr > 0:
                raise UserError(f"{key}.lr: must be > 0, got {model.lr!r}")
        check_heads(self.sizes, "variants.sizes")
        if len(set(self.sizes)) != len(self.sizes):
            raise UserError("variants.sizes: the same size is listed twice")
        if len(set(self.budgets)) != len(self.budgets):
            raise UserError("variants.budgets: the same budget is listed twice")
        if self.enabled and not self.models:
            raise UserError("variants.models: the phase is enabled but lists no variant")
