"""The architecture-variants phase: each variant's size ladder, trained and fitted like the base.

Hunyuan-Large (arXiv:2411.02265) ran IsoFLOP profiles for mixture-of-experts models against
ACTIVE parameters; MiniMax-01 (arXiv:2501.08313) compared lightning (linear) attention with
softmax attention by their loss-compute curves; Cerebras-GPT (arXiv:2304.03208) compared SP with
muP along its compute ladder. All three questions are this phase: every variant in
`variants.models` (a name plus `GPTConfig` settings: `attention`, `feature_map`, `mlp`,
`n_experts`, `moe_top_k`, `moe_aux_coef`, and its own `parametrization` and peak `lr`, by default
the study's `parametrization.name` and `training.lr`) trains the ladder `variants.sizes` on the
budgets `variants.budgets` (empty: `model.sizes` / `isoflop.budgets`) with the study's training
and schedule, by the same series specs, `train stable` / `train branch` jobs and WSD rewind
branches as the base IsoFLOP phase (`study.series_spec`).

`variants.name` names the phase's outputs (`PhaseFiles`): `results/fits/<name>.json`,
`results/figures/<name>.png` (loss against compute with each variant's frontier law and its
residuals), `<name>_envelope.png`, `<name>_isoflop.png`, runs under `results/runs/<name>/`.
The default, `variants`, gives the architecture study's paths; workflow/configs/sp_vs_mup.yaml
names it `sp_vs_mup`. One study runs one such phase at a time.

Counting (see `scalinglab.model.flops`): the table's `N` is the ACTIVE non-embedding parameter count
(`ModelCounts.N_active`: k experts and the router per MoE layer), the axis of both fits and of
tokens per parameter; the FLOPs per token, hence steps per budget, follow N_active too.
`N_nonembedding` (every expert) and `N_total` (everything) are kept beside it.

Ids are built here, never in Snakemake: series `<variant>-<p>-l<layers>-d<width>-h<heads>-lr<lr>
-b<batch>` (e.g. `moe-sp-l2-d32-h2-lr3e-03-b16`), runs `<series>_C<budget>`; a variant name is
lower-case letters and digits, so ids stay unambiguous.

The analysis (collect, the fits, the comparison) is `scalinglab.phases.variants_analysis`; the
`variants` section itself is `scalinglab.config.variants.VariantsConfig`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import pandas as pd

from scalinglab.config import SizeConfig, VariantConfig, to_dict
from scalinglab.config.variants import MODEL_SETTINGS
from scalinglab.errors import UserError
from scalinglab.model.flops import model_counts
from scalinglab.phases import study
from scalinglab.phases.base import Phase
from scalinglab.training.schedule import decay_start_step
from scalinglab.training.spec import RunSpec

PHASE = "variants"


def ladder(cfg) -> tuple:
    return cfg.variants.sizes or cfg.model.sizes


def budgets(cfg) -> tuple[float, ...]:
    return cfg.variants.budgets or cfg.isoflop.budgets


def run_config(cfg, variant: VariantConfig):
    """The study config as `variant`'s runs see it: its parametrization and its peak LR (the
    study's where the variant sets none); everything else of `parametrization` is shared."""
    name = variant.parametrization or cfg.parametrization.name
    lr = cfg.training.lr if variant.lr is None else variant.lr
    return replace(cfg, parametrization=replace(cfg.parametrization, name=name),
                   training=replace(cfg.training, lr=lr))


def gpt_config(cfg, variant: VariantConfig, size):
    """The base model of `size` under the variant's parametrization, turned into `variant`."""
    return replace(study.gpt_config(run_config(cfg, variant), size),
                   **{k: getattr(variant, k) for k in MODEL_SETTINGS})


def series_id(variant: VariantConfig, cfg, size) -> str:
    run = run_config(cfg, variant)
    return f"{variant.name}-" + study.series_id(run.parametrization.name, size,
                                                run.training.lr, run.training.batch_size)


def check_widths(cfg) -> None:
    """Every muP variant needs each ladder width to be a whole multiple of base_width (m >= 1
    and whole: the base is the proxy the LR was tuned on, as in `lr_transfer.check_config`)."""
    base = cfg.parametrization.base_width
    sizes_key = "variants.sizes" if cfg.variants.sizes else "model.sizes"
    for j, variant in enumerate(cfg.variants.models):
        if run_config(cfg, variant).parametrization.name != "mup":
            continue
        why = (f"variant {variant.name} is muP (variants.models[{j}].parametrization or "
               "parametrization.name)")
        for i, size in enumerate(ladder(cfg)):
            if size.n_embd < base:
                raise UserError(f"{sizes_key}[{i}]: {why} and needs n_embd >= "
                                f"parametrization.base_width={base}, got {size.n_embd}")
            if size.n_embd % base:
                raise UserError(f"{sizes_key}[{i}]: {why}; parametrization.base_width={base} "
                                f"does not divide n_embd={size.n_embd}")


def plan(cfg) -> pd.DataFrame:
    """One row per (variant, size, budget) in the column layout of `study.plan_isoflop` (so
    that `study.series_spec` reads it), with `N` the active count, plus `variant`, `N_active`
    and `N_nonembedding`. Empty when the phase is off."""
    if not cfg.variants.enabled:
        return pd.DataFrame()
    check_widths(cfg)
    labels = [study.budget_label(b) for b in budgets(cfg)]
    if len(set(labels)) != len(labels):
        raise UserError("variants.budgets: two budgets share the same label (listed twice?)")
    tokens_per_step = study.batch_tokens(cfg)
    rows = []
    for variant in cfg.variants.models:
        run = run_config(cfg, variant)
        for size in ladder(cfg):
            counts = model_counts(gpt_config(cfg, variant, size), cfg.flops.convention)
            sid = series_id(variant, cfg, size)
            for budget, label in zip(budgets(cfg), labels, strict=True):
                steps = round(budget / (counts.flops_per_token * tokens_per_step))
                if cfg.schedule.kind == "cosine" or steps < 1:
                    decay_start = 0  # as in study.plan_isoflop: a cosine run is not branched
                else:
                    decay_start = decay_start_step(steps, cfg.schedule.decay_fraction,
                                                   cfg.schedule.decay_shape)
                tokens = steps * tokens_per_step
                rows.append({
                    "phase": PHASE, "variant": variant.name, "series_id": sid, "label": label,
                    "run_id": f"{sid}_{label}", "parametrization": run.parametrization.name,
                    "n_layer": size.n_layer, "n_embd": size.n_embd, "n_head": size.n_head,
                    "lr": run.training.lr, "batch_size": cfg.training.batch_size,
                    "schedule": study.schedule_name(cfg),
                    "N": counts.N_active, "N_active": counts.N_active,
                    "N_nonembedding": counts.N, "N_total": counts.N_total,
                    "flops_per_token": counts.flops_per_token, "C": float(budget),
                    "C_actual": counts.flops_per_token * tokens, "D": tokens, "steps": steps,
                    "decay_start": decay_start, "warmup_steps": study.warmup_steps(cfg),
                })
    table = pd.DataFrame(rows)
    # the base phase's rules: too few steps, too many tokens per (active) parameter, a decay
    # inside the warmup
    table["reason"] = [study.exclusion_reason(cfg, row) for row in table.itertuples()]
    trained_starts = table["decay_start"].where(table["reason"] == "", 0)
    table["stable_steps"] = trained_starts.groupby(table["series_id"]).transform("max")
    for (name, budget), rows_ in table.groupby(["variant", "C"], sort=False):
        if not (rows_["reason"] == "").any():
            raise UserError(f"variants.budgets: budget {budget:.3g} gives variant {name} no "
                            f"usable run for any size (e.g. {rows_['reason'].iloc[0]})")
    return table


def training_flops(cfg, table: pd.DataFrame) -> float:
    """FLOPs the phase trains: each series' stable run (to its last trained branch point) plus
    every trained branch's decay; less than the branches' budgets summed, which count the
    shared stable part once per branch."""
    trained = table[table["reason"] == ""]
    if trained.empty:
        return 0.0
    per_token = trained["flops_per_token"] * study.batch_tokens(cfg)
    stable = (trained["stable_steps"] * per_token).groupby(trained["series_id"]).first().sum()
    decays = ((trained["steps"] - trained["decay_start"]) * per_token).sum()
    return float(stable + decays)


def series_spec(cfg, table: pd.DataFrame, sid: str) -> RunSpec:
    """The spec file of one series, in the format `train.train_stable` / `decay_branch` read:
    `study.series_spec` under the variant's parametrization and LR (`run_config`), with its
    model settings and counts."""
    rows = table[table["series_id"] == sid]
    if rows.empty:
        raise UserError(f"unknown variants series {sid!r}")
    first = rows.iloc[0]
    variant = next(v for v in cfg.variants.models if v.name == first.variant)
    size = SizeConfig(int(first.n_layer), int(first.n_embd), int(first.n_head))
    return replace(study.series_spec(run_config(cfg, variant), rows, sid),
                   model=to_dict(gpt_config(cfg, variant, size)), variant=variant.configured(),
                   N_active=int(first.N_active), N_nonembedding=int(first.N_nonembedding))


# -- what Snakemake asks of the phase --------------------------------------------------------------
def _named(template: str, doc: str | None = None) -> property:
    """A path of `PhaseFiles`: `template` with `{name}` the phase's name."""
    return property(lambda files: template.format(name=files.name), doc=doc)


def _beside(kind: str) -> property:
    """A folder of `PhaseFiles` beside every rule's (logs, benchmarks): `results/<kind>` for the
    default name (each rule's own folder below it), `results/<kind>/<name>` for another."""
    return property(lambda files: f"results/{kind}" + ("" if files.name == PHASE
                                                        else f"/{files.name}"))


@dataclass(frozen=True)
class PhaseFiles:
    """The file names, input and params functions of the phase's rules
    (workflow/rules/variants.smk), kept here so that the rule file holds rules only; their
    resources come from scalinglab.training.resources.

    Every path follows from `variants.name`; with the default name, `variants`, they are the
    architecture study's (results/variants/, results/fits/variants.json, ...), and the logs and
    benchmarks keep their folders (results/logs/<rule>/...). Another name gets its own folders,
    its logs under results/logs/<name>/.
    """

    cfg: object
    table: pd.DataFrame

    @classmethod
    def of(cls, cfg) -> PhaseFiles:
        return cls(cfg, plan(cfg))

    @property
    def name(self) -> str:
        return self.cfg.variants.name

    tables_dir = _named("results/{name}", "plan.csv, runs.csv, curves.csv")
    runs_dir = _named("results/runs/{name}")
    specs_dir = _named("results/specs/{name}")
    fit_json = _named("results/fits/{name}.json")
    logs_dir = _beside("logs")
    benchmarks_dir = _beside("benchmarks")

    def figure(self, kind: str = "") -> str:
        """`results/figures/<name>.png` (the frontier figure) or `<name>_<kind>.png`."""
        return f"results/figures/{self.name}{'_' + kind if kind else ''}.png"

    @property
    def category(self) -> str:
        """The report's category of the figures."""
        return "Architecture variants" if self.name == PHASE else self.name

    @property
    def targets(self) -> list[str]:
        """What `rule all` asks of the phase: nothing when it is off."""
        if not self.cfg.variants.enabled:
            return []
        return [f"{self.tables_dir}/plan.csv", f"{self.tables_dir}/runs.csv", self.fit_json,
                self.figure(), self.figure("envelope"), self.figure("isoflop")]

    @property
    def reference_args(self) -> str:
        """`--reference NAME` for `variants fit` when the config names one, else nothing."""
        ref = self.cfg.variants.reference
        return f"--reference {ref}" if ref else ""

    def _trained(self) -> pd.DataFrame:
        return self.table[self.table["reason"] == ""] if not self.table.empty else self.table

    @property
    def series(self) -> list[str]:
        return [] if self.table.empty else sorted(self._trained()["series_id"].unique())

    @property
    def labels(self) -> list[str]:
        return [] if self.table.empty else list(dict.fromkeys(self.table["label"]))

    def spec(self, wildcards) -> dict:
        return series_spec(self.cfg, self.table, wildcards.vseries).to_dict()

    def spec_json(self, wildcards) -> str:
        return json.dumps(self.spec(wildcards), sort_keys=True)

    def stable_run_jsons(self, wildcards) -> list[str]:
        return [f"{self.runs_dir}/{sid}/stable/run.json" for sid in self.series]

    def branch_run_jsons(self, wildcards) -> list[str]:
        return [f"{self.runs_dir}/{row.series_id}/{row.label}/run.json"
                for row in self._trained().itertuples()]


# -- the phase, on the shared abstraction (scalinglab.phases.base) ----------------------------
@dataclass(frozen=True)
class Variants(Phase):
    name: str = "variant"
    section: str = "variants"

    def folder(self, cfg):
        return cfg.variants.name

    def plan(self, cfg):
        return plan(cfg)

    def series_spec(self, cfg, table, sid):
        return series_spec(cfg, table, sid)

    def groups(self, cfg):
        table = self.plan(cfg)
        if table.empty:
            return []
        files = PhaseFiles(cfg, table)
        return [self.group(cfg, table, threads=None, plan=f"{files.tables_dir}/plan.csv")]

    def targets(self, cfg):
        return PhaseFiles(cfg, self.plan(cfg)).targets

    def summary(self, cfg):
        table = self.plan(cfg)
        if table.empty:
            return []
        kept = table[table["reason"] == ""]
        return [f"variants ({cfg.variants.name}): {len(kept)} branches to train, "
                f"{kept['C_actual'].sum():.3g} FLOPs "
                f"({training_flops(cfg, table):.3g} trained: the branches share "
                "their series' stable run)"]
