"""The architecture-variants phase: each variant's size ladder, trained and fitted like the base.

Hunyuan-Large (arXiv:2411.02265) ran IsoFLOP profiles for mixture-of-experts models against
ACTIVE parameters; MiniMax-01 (arXiv:2501.08313) compared lightning (linear) attention with
softmax attention by their loss-compute curves. Both questions are this phase: every variant in
`variants.models` (a name plus `GPTConfig` settings: `attention`, `feature_map`, `mlp`,
`n_experts`, `moe_top_k`, `moe_aux_coef`) trains the ladder `variants.sizes` on the budgets
`variants.budgets` (empty: `model.sizes` / `isoflop.budgets`) with the study's parametrization,
training and schedule, by the same series specs, `train-stable` / `decay-branch` jobs and WSD
rewind branches as the base IsoFLOP phase (`study.series_spec`).

Counting (see `scalinglab.flops`): the table's `N` is the ACTIVE non-embedding parameter count
(`ModelCounts.N_active`: k experts and the router per MoE layer), the axis of both fits and of
tokens per parameter; the FLOPs per token, hence steps per budget, follow N_active too.
`N_nonembedding` (every expert) and `N_total` (everything) are kept beside it.

Ids are built here, never in Snakemake: series `<variant>-<p>-l<layers>-d<width>-h<heads>-lr<lr>
-b<batch>` (e.g. `moe-sp-l2-d32-h2-lr3e-03-b16`), runs `<series>_C<budget>`; a variant name is
lower-case letters and digits, so ids stay unambiguous.

config.py imports `VariantsConfig` from here, so this module imports config and study inside its
functions, not at the top (they import config themselves).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from scalinglab.errors import UserError
from scalinglab.linear_attention import FEATURE_MAPS

PHASE = "variants"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*$")
SETTINGS = ("attention", "feature_map", "mlp", "n_experts", "moe_top_k", "moe_aux_coef")


def _positive(doc: str) -> dict:
    return {"doc": doc, "min": 0, "exclusive": True}


@dataclass(frozen=True)
class VariantConfig:
    """One architecture: a name and the `GPTConfig` settings that make it."""

    name: str = field(metadata={"doc": "id of the variant: lower-case letters and digits"})
    attention: str = field(default="softmax", metadata={"doc": "softmax | linear",
                                                        "choices": ("softmax", "linear")})
    feature_map: str = field(default="elu", metadata={"doc": "linear attention kernel",
                                                      "choices": FEATURE_MAPS})
    mlp: str = field(default="dense", metadata={"doc": "dense | moe", "choices": ("dense", "moe")})
    n_experts: int = field(default=1, metadata=_positive("experts per MoE layer"))
    moe_top_k: int = field(default=1, metadata=_positive("experts per token (<= n_experts)"))
    moe_aux_coef: float = field(
        default=0.01, metadata={"doc": "weight of the load-balancing loss", "min": 0}
    )


@dataclass(frozen=True)
class VariantSize:
    """One rung of the phase's ladder (the fields of `config.SizeConfig`, which this module
    cannot import at load time)."""

    n_layer: int = field(metadata=_positive("number of transformer blocks"))
    n_embd: int = field(metadata=_positive("residual stream width"))
    n_head: int = field(metadata=_positive("attention heads; must divide n_embd"))


@dataclass(frozen=True)
class VariantsConfig:
    """The architecture-variants phase (off unless `enabled`)."""

    enabled: bool = field(default=False, metadata={"doc": "run the architecture-variants phase"})
    models: tuple[VariantConfig, ...] = field(
        default=(), metadata={"doc": "the variants compared, each trained on the whole ladder"}
    )
    sizes: tuple[VariantSize, ...] = field(
        default=(), metadata={"doc": "the ladder of every variant (empty: model.sizes)"}
    )
    budgets: tuple[float, ...] = field(
        default=(), metadata={"doc": "compute budgets in FLOPs (empty: isoflop.budgets)",
                              "min": 0, "exclusive": True}
    )

    def __post_init__(self) -> None:
        # checks within the section; those against other sections are in `check_config`
        names = [m.name for m in self.models]
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
        for i, size in enumerate(self.sizes):
            if size.n_embd % size.n_head:
                raise UserError(f"variants.sizes[{i}]: n_head={size.n_head} does not divide "
                                f"n_embd={size.n_embd}")
        if len(set(self.sizes)) != len(self.sizes):
            raise UserError("variants.sizes: the same size is listed twice")
        if len(set(self.budgets)) != len(self.budgets):
            raise UserError("variants.budgets: the same budget is listed twice")
        if self.enabled and not self.models:
            raise UserError("variants.models: the phase is enabled but lists no variant")


def ladder(cfg) -> tuple:
    return cfg.variants.sizes or cfg.model.sizes


def budgets(cfg) -> tuple[float, ...]:
    return cfg.variants.budgets or cfg.isoflop.budgets


def gpt_config(cfg, variant: VariantConfig, size):
    """The base model of `size` under the study's parametrization, turned into `variant`."""
    from scalinglab import study

    return replace(study.gpt_config(cfg, size), **{k: getattr(variant, k) for k in SETTINGS})


def series_id(variant: VariantConfig, cfg, size) -> str:
    from scalinglab import study

    return f"{variant.name}-" + study.series_id(cfg.parametrization.name, size,
                                                cfg.training.lr, cfg.training.batch_size)


def plan(cfg) -> pd.DataFrame:
    """One row per (variant, size, budget) in the column layout of `study.plan_isoflop` (so
    that `study.series_spec` reads it), with `N` the active count, plus `variant`, `N_active`
    and `N_nonembedding`. Empty when the phase is off."""
    from scalinglab import study
    from scalinglab.flops import model_counts
    from scalinglab.schedule import decay_start_step

    if not cfg.variants.enabled:
        return pd.DataFrame()
    labels = [study.budget_label(b) for b in budgets(cfg)]
    if len(set(labels)) != len(labels):
        raise UserError("variants.budgets: two budgets share the same label (listed twice?)")
    tokens_per_step = study.batch_tokens(cfg)
    rows = []
    for variant in cfg.variants.models:
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
                    "run_id": f"{sid}_{label}", "parametrization": cfg.parametrization.name,
                    "n_layer": size.n_layer, "n_embd": size.n_embd, "n_head": size.n_head,
                    "lr": cfg.training.lr, "batch_size": cfg.training.batch_size,
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


def series_spec(cfg, table: pd.DataFrame, sid: str) -> dict:
    """The spec file of one series, in the format `train.train_stable` / `decay_branch` read:
    `study.series_spec` with the variant's model settings and counts."""
    from scalinglab import study
    from scalinglab.config import to_dict

    rows = table[table["series_id"] == sid]
    if rows.empty:
        raise UserError(f"unknown variants series {sid!r}")
    first = rows.iloc[0]
    variant = next(v for v in cfg.variants.models if v.name == first.variant)
    size = VariantSize(int(first.n_layer), int(first.n_embd), int(first.n_head))
    spec = study.series_spec(cfg, rows, sid)
    spec["model"] = to_dict(gpt_config(cfg, variant, size))
    spec["variant"] = to_dict(variant)
    spec["N_active"] = int(first.N_active)
    spec["N_nonembedding"] = int(first.N_nonembedding)
    return spec


# -- metrics ---------------------------------------------------------------------------------------
EXTRA_COLUMNS = ("variant", "N_active", "N_nonembedding", *SETTINGS)


def collect(stable_jsons, branch_jsons) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`metrics.collect`'s runs and curves tables with the columns `EXTRA_COLUMNS` added: the
    variant's name, counts and settings (`N` is already the active count: the specs carry it)."""
    from scalinglab.metrics import collect as collect_runs

    runs, curves = collect_runs(stable_jsons, branch_jsons)
    info = {}
    for path in [*stable_jsons, *branch_jsons]:
        spec = json.loads(Path(path).read_text())["spec"]
        if "variant" not in spec:
            raise UserError(f"{path}: not a run of the variants phase (no 'variant' in its spec)")
        v = spec["variant"]
        info[spec["series_id"]] = (v["name"], spec["N_active"], spec["N_nonembedding"],
                                   *(v[k] for k in SETTINGS))
    for table in (runs, curves):
        for j, column in enumerate(EXTRA_COLUMNS):
            table.insert(1 + j, column, [info[s][j] for s in table["series_id"]])
    return runs, curves


# -- fits ------------------------------------------------------------------------------------------
def _allocation(fit, boot) -> dict:
    """An `laws.AllocationFit` as JSON, with the keys of `scalinglab fit isoflop|envelope`."""
    from scalinglab import laws

    top = max(b.C for b in fit.budgets)
    out = {
        "method": fit.method, "a": fit.a, "k_n": fit.k_n, "b": fit.b, "k_d": fit.k_d,
        "laws": "N_opt = k_n * C^a; D_opt = k_d * C^b (N: active parameters)",
        "tokens_per_param": float(fit.tokens_per_param(top)),
        "tokens_per_param_at_C": top,
        "tokens_per_param_geomean": float(np.exp(np.mean(
            [np.log(b.tokens_per_param) for b in fit.budgets]))),
        "budgets": [{"C": b.C, "N_opt": b.N_opt, "D_opt": b.D_opt, "loss_opt": b.loss_opt,
                     "tokens_per_param": b.tokens_per_param, "n_points": b.n_points,
                     "inside_range": b.inside_range} for b in fit.budgets],
        "dropped": [{"C": d.C, "n_points": d.n_points, "reason": d.reason}
                    for d in fit.dropped],
        "ci": None,
    }
    if boot is not None and len(boot.samples):
        ci = boot.intervals()
        out["ci"] = {k: ci[k] for k in ("a", "b")}
        tpp = laws.allocation_samples_at(boot, top)["tokens_per_param"]
        tpp = tpp[np.isfinite(tpp)]
        if len(tpp):
            out["ci"]["tokens_per_param"] = [float(x) for x in np.percentile(tpp, [2.5, 97.5])]
    return out


def _attempt(fn, *args, **kw):
    from scalinglab.laws import FitError

    try:
        return fn(*args, **kw), None
    except FitError as err:
        return None, str(err)


def fit_variant(runs: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict:
    """Method 2 (`laws.fit_isoflop`) and Method 1 (`laws.fit_envelope`) on one variant's final
    losses, against active parameters, plus a power law of the envelope's loss in compute.

    Method 1 takes the decay branches' final (annealed) losses, so its grid is the budgets and
    its optimum the best ladder size at each; the stable runs' evaluations are at the constant
    peak LR and would put the envelope too high. A fit the data cannot support is recorded as
    {"error": why} rather than stopping the phase's other variants.
    """
    from scalinglab import laws

    ok = runs[np.isfinite(runs["loss"])]
    C, N, loss, D = (ok[k].to_numpy(float) for k in ("C", "N", "loss", "D"))
    out: dict = {"n_runs": int(len(runs)), "n_nonfinite": int(len(runs) - len(ok))}
    fit, err = _attempt(laws.fit_isoflop, C, N, loss, D)
    boot = laws.bootstrap_isoflop(C, N, loss, D, n_boot=n_boot, seed=seed) if fit else None
    out["isoflop"] = _allocation(fit, boot) if fit else {"error": err}
    run = ok["run_id"].to_numpy()
    env, err = _attempt(laws.fit_envelope, run, C, N, loss, D)
    boot = (laws.bootstrap_envelope(run, C, N, loss, D, n_boot=min(n_boot, 200), seed=seed)
            if env else None)
    out["envelope"] = _allocation(env, boot) if env else {"error": err}
    if env:
        frontier = [(b.C, b.loss_opt) for b in env.budgets]
        law, err = _attempt(laws.fit_power_law, *zip(*frontier, strict=True))
        out["loss_law"] = ({"form": "L_opt = coef * C^exponent (envelope minima)",
                            "coef": law.coef, "exponent": law.exponent,
                            "n_points": law.n_points} if law else {"error": err})
    else:
        out["loss_law"] = {"error": "no envelope"}
    return out


def fit(runs: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """The content of `results/fits/variants.json` from `collect`'s runs table: per variant its
    settings, counts and `fit_variant`, variants in name order."""
    if runs.empty:
        raise UserError("variants-fit: no runs given")
    result = {
        "parameter_axis": "N = active non-embedding parameters (scalinglab.flops.N_active); "
                          "tokens_per_param = D_opt / N_opt per active parameter",
        "variants": {},
    }
    for name in sorted(runs["variant"].unique()):
        rows = runs[runs["variant"] == name]
        sizes = rows.drop_duplicates("series_id").sort_values("N")
        first = rows.iloc[0]
        entry = {"settings": {k: first[k].item() if hasattr(first[k], "item") else first[k]
                              for k in SETTINGS},
                 "sizes": [{"n_layer": int(r.n_layer), "n_embd": int(r.n_embd),
                            "N_active": int(r.N), "N_nonembedding": int(r.N_nonembedding),
                            "N_total": int(r.N_total)} for r in sizes.itertuples()]}
        entry.update(fit_variant(rows, n_boot=n_boot, seed=seed))
        result["variants"][str(name)] = entry
    return result


def summary_lines(result: dict) -> list[str]:
    lines = []
    for name, v in result["variants"].items():
        parts = [name]
        for method in ("isoflop", "envelope"):
            f = v[method]
            parts.append(f"{method}: " + (f"a={f['a']:.3f} b={f['b']:.3f} "
                                          f"{f['tokens_per_param']:.1f} tokens/active param"
                                          if "error" not in f else f"failed ({f['error']})"))
        law = v["loss_law"]
        if "error" not in law:
            parts.append(f"L_opt ~ C^{law['exponent']:.3f}")
        lines.append("; ".join(parts))
    return lines


# -- what Snakemake asks of the phase --------------------------------------------------------------
@dataclass(frozen=True)
class PhaseFiles:
    """The input, params and resource functions of the phase's rules (workflow/rules/
    variants.smk), kept here so that the rule file holds rules only."""

    cfg: object
    table: pd.DataFrame
    runs_dir: str
    cpu_flops_per_second: float

    def _trained(self) -> pd.DataFrame:
        return self.table[self.table["reason"] == ""] if not self.table.empty else self.table

    @property
    def series(self) -> list[str]:
        return [] if self.table.empty else sorted(self._trained()["series_id"].unique())

    @property
    def labels(self) -> list[str]:
        return [] if self.table.empty else list(dict.fromkeys(self.table["label"]))

    def spec_json(self, wildcards) -> str:
        return json.dumps(series_spec(self.cfg, self.table, wildcards.vseries), sort_keys=True)

    def stable_run_jsons(self, wildcards) -> list[str]:
        return [f"{self.runs_dir}/{sid}/stable/run.json" for sid in self.series]

    def branch_run_jsons(self, wildcards) -> list[str]:
        return [f"{self.runs_dir}/{row.series_id}/{row.label}/run.json"
                for row in self._trained().itertuples()]

    def runtime(self, wildcards) -> int:
        """Minutes, from a pessimistic CPU rate (as for the IsoFLOP runs)."""
        rows = self.table[self.table["series_id"] == wildcards.vseries]
        if "vlabel" in wildcards.keys():
            flops = float(rows[rows["label"] == wildcards.vlabel]["C_actual"].iloc[0])
        else:
            first = rows.iloc[0]
            flops = float(first.stable_steps * first.D / max(first.steps, 1)
                          * first.flops_per_token)
        return max(10, int(3 * flops / self.cpu_flops_per_second / 60))

    def mem_mb(self, wildcards) -> int:
        # weights, grads and two Adam moments in fp32, plus activations and the torch runtime
        rows = self.table[self.table["series_id"] == wildcards.vseries]
        per_process = 1500 + int(16 * int(rows["N_total"].iloc[0]) / 2**20) * 4
        return per_process * self.cfg.resources.gpus_per_run  # data parallel: once per process


def finite_or_none(obj):
    """JSON has no NaN: write null instead."""
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_none(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
