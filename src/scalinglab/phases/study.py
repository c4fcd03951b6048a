"""The study as a table: the config expanded into one row per (size, budget) run.

Snakemake never builds ids or loops over sizes itself: it reads this table. One stable (warmup +
constant LR) run per size, the *series*, serves every compute budget through a labelled
"rewind-decay" branch (WSD, arXiv:2404.06395 / arXiv:2405.18392): the stable run saves a
checkpoint where each budget's decay would begin, and each (size, budget) branch decays from it.

Every series of a phase carries the same labels (one per budget), so the stable rule's outputs are
named files known when the DAG is built. A (size, budget) pair that cannot make a useful run
(fewer than `min_steps` steps, or a decay that would start inside warmup) is left out of the
branch table, with the reason, but its checkpoint is still written: it costs nothing extra.
"""

from __future__ import annotations

import math

import pandas as pd

from scalinglab.config import SizeConfig, StudyConfig, to_dict
from scalinglab.data.tokenizer import check_vocab_size
from scalinglab.errors import UserError
from scalinglab.model.flops import model_counts
from scalinglab.model.gpt import GPTConfig
from scalinglab.model.parametrization import model_multipliers
from scalinglab.training.schedule import decay_start_step
from scalinglab.training.spec import BranchSpec, RunSpec

ISOFLOP_PHASE = "isoflop"
# the phases whose branches are scored on the downstream task: the runs its sigmoid is fitted on
# and the validation run it predicts; scoring every sweep's branches would feed nothing
SCORED_PHASES = (ISOFLOP_PHASE, "validation")


def format_number(x: float) -> str:
    """Canonical short text for a number in an id: 3e-03, 1.5e12, 16 (fixed, locale-free)."""
    if float(x).is_integer() and abs(x) < 1e5:
        return str(int(x))
    mantissa, exponent = f"{x:.3e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    exp = int(exponent)
    return f"{mantissa}e{exp:03d}" if exp < 0 else f"{mantissa}e{exp}"


def size_label(size: SizeConfig) -> str:
    return f"l{size.n_layer}-d{size.n_embd}-h{size.n_head}"


def size_label_of(row) -> str:
    """`size_label` of a table row with n_layer, n_embd and n_head columns."""
    return size_label(SizeConfig(int(row.n_layer), int(row.n_embd), int(row.n_head)))


def series_id(parametrization: str, size: SizeConfig, lr: float, batch_size: int) -> str:
    return f"{parametrization}-{size_label(size)}-lr{format_number(lr)}-b{batch_size}"


def budget_label(budget: float) -> str:
    return f"C{format_number(budget)}"


def gpt_config(cfg: StudyConfig, size: SizeConfig) -> GPTConfig:
    multipliers = model_multipliers(cfg.parametrization, size.n_layer, size.n_embd, size.n_head)
    return GPTConfig(
        vocab_size=cfg.tokenizer.vocab_size,
        block_size=cfg.model.block_size,
        n_layer=size.n_layer,
        n_embd=size.n_embd,
        n_head=size.n_head,
        mlp_ratio=cfg.model.mlp_ratio,
        **multipliers,
    )


def check_config(cfg: StudyConfig) -> None:
    """Semantic checks that types alone cannot express; raise UserError naming the key."""
    for i, size in enumerate(cfg.model.sizes):
        if size.n_embd % size.n_head:
            raise UserError(
                f"model.sizes[{i}]: n_head={size.n_head} does not divide n_embd={size.n_embd}"
            )
    labels = [size_label(s) for s in cfg.model.sizes]
    if len(set(labels)) != len(labels):
        raise UserError("model.sizes: the same size is listed twice")
    budgets = [budget_label(b) for b in cfg.isoflop.budgets]
    if len(set(budgets)) != len(budgets):
        raise UserError("isoflop.budgets: two budgets share the same label (listed twice?)")
    predicted = [budget_label(b) for b in cfg.isoflop.predicted_budgets]
    if len(set(predicted)) != len(predicted):
        raise UserError("isoflop.predicted_budgets: two budgets share the same label (listed "
                        "twice?)")
    # a config merged over config.yaml inherits its predicted budgets: say how to drop them
    drop = "; set isoflop.predicted_budgets: [] to predict none"
    both = sorted(set(predicted) & set(budgets))
    if both:
        raise UserError(f"isoflop.predicted_budgets: {both[0]} is also a trained budget "
                        "(isoflop.budgets); a budget is either trained or predicted" + drop)
    if predicted and cfg.schedule.kind != "wsd":
        raise UserError("isoflop.predicted_budgets: a predicted budget is a decay branch of a "
                        f"WSD stable run; schedule.kind is {cfg.schedule.kind!r}" + drop)
    low, high = min(cfg.isoflop.budgets, default=0), max(cfg.isoflop.budgets, default=0)
    outside = [b for b in cfg.isoflop.predicted_budgets if not low < b < high]
    if outside:
        raise UserError(f"isoflop.predicted_budgets: {outside[0]:.3g} is not between the "
                        f"smallest and the largest trained budget ({low:.3g}, {high:.3g}): the "
                        "schedule law interpolates between trained branches" + drop)
    check_vocab_size(cfg.tokenizer.vocab_size)  # 257 (256 bytes + <|endoftext|>) to 2**32 - 1
    gpt_config(cfg, cfg.model.sizes[0])  # lets the parametrization reject its own bad keys


def warmup_steps(cfg: StudyConfig) -> int:
    return math.ceil(cfg.training.warmup_tokens / batch_tokens(cfg))


def batch_tokens(cfg: StudyConfig) -> int:
    return cfg.training.batch_size * cfg.model.block_size


def plan_isoflop(cfg: StudyConfig) -> pd.DataFrame:
    """Expand the IsoFLOP grid into one row per (size, budget). Rows that will not be trained
    carry their `reason`; `reason == ""` marks a branch to train (see `trained_runs`)."""
    check_config(cfg)
    table = plan_sizes(cfg, cfg.model.sizes)
    _check_every_budget_has_runs(cfg, table)
    return table


def plan_predicted(cfg: StudyConfig) -> pd.DataFrame:
    """The rows of `isoflop.predicted_budgets` on the first grid's series: branches that train
    nothing, whose loss the schedule law predicts (`phases.schedule_law.predict_runs`).

    A size enters a predicted budget as it would a trained one, and only between its own trained
    branches: the branch must decay from a point its stable run trains through (beyond it the law
    would extrapolate the stable curve too) and be no shorter than the size's shortest trained
    branch (below it, the law would extrapolate the decay's gain). Empty (with the plan's
    columns) when no budget is predicted."""
    trained_plan = plan_isoflop(cfg)
    if not cfg.isoflop.predicted_budgets:
        return trained_plan.iloc[:0]
    table = plan_sizes(cfg, cfg.model.sizes, budgets=cfg.isoflop.predicted_budgets)
    trained = trained_runs(trained_plan).groupby("series_id")
    table["stable_steps"] = table["series_id"].map(trained["stable_steps"].max()).fillna(0)
    table["stable_steps"] = table["stable_steps"].astype(int)
    shortest = table["series_id"].map(trained["steps"].min())
    open_ = table["reason"] == ""
    untrained = open_ & shortest.isna()
    table.loc[untrained, "reason"] = "the size trains no branch the law could be fitted on"
    beyond = open_ & ~untrained & (table["decay_start"] > table["stable_steps"])
    table.loc[beyond, "reason"] = [
        f"decay would start at step {row.decay_start}, after the stable run's last step "
        f"({row.stable_steps}): the law would extrapolate" for row in table[beyond].itertuples()]
    # the law sees no decay shorter than the shortest trained one: below it, it would guess
    short = open_ & ~untrained & ~beyond & (table["steps"] < shortest)
    table.loc[short, "reason"] = [
        f"{row.steps} steps is shorter than the size's shortest trained branch "
        f"({int(shortest[row.Index])} steps): the law would extrapolate its decay"
        for row in table[short].itertuples()]
    return table


def plan_sizes(cfg: StudyConfig, sizes, *, seed: int | None = None, round_: int = 0,
               budgets=None) -> pd.DataFrame:
    """The (size, budget) rows of `sizes` on every budget (`isoflop.budgets`, or `budgets`):
    the first round's grid, or the sizes and seeds a later round adds (`phases.isoflop_rounds`).
    A seed other than the study's is part of the series id, so a repeat never shares a folder
    with the run it repeats."""
    seed = cfg.seed if seed is None else seed
    budgets = cfg.isoflop.budgets if budgets is None else budgets
    rows = []
    for size in sizes:
        counts = model_counts(gpt_config(cfg, size), cfg.flops.convention)
        sid = series_id(cfg.parametrization.name, size, cfg.training.lr, cfg.training.batch_size)
        if seed != cfg.seed:
            sid = f"{sid}-s{seed}"
        for budget in budgets:
            steps = round(budget / (counts.flops_per_token * batch_tokens(cfg)))
            if cfg.schedule.kind == "cosine" or steps < 1:
                decay_start = 0  # a cosine run cannot be branched: it trains from the start
            else:
                decay_start = decay_start_step(
                    steps, cfg.schedule.decay_fraction, cfg.schedule.decay_shape
                )
            tokens = steps * batch_tokens(cfg)
            rows.append(
                {
                    "phase": ISOFLOP_PHASE,
                    "series_id": sid,
                    "label": budget_label(budget),
                    "run_id": f"{sid}_{budget_label(budget)}",
                    "parametrization": cfg.parametrization.name,
                    "n_layer": size.n_layer,
                    "n_embd": size.n_embd,
                    "n_head": size.n_head,
                    "lr": cfg.training.lr,
                    "batch_size": cfg.training.batch_size,
                    "schedule": schedule_name(cfg),
                    "N": counts.N,
                    "N_total": counts.N_total,
                    "flops_per_token": counts.flops_per_token,
                    "C": float(budget),
                    "C_actual": counts.flops_per_token * tokens,
                    "D": tokens,
                    "steps": steps,
                    "decay_start": decay_start,
                    "warmup_steps": warmup_steps(cfg),
                    "seed": seed,
                    "round": round_,
                }
            )
    table = pd.DataFrame(rows)
    table["reason"] = [exclusion_reason(cfg, row) for row in table.itertuples()]
    return with_stable_steps(table)


def with_stable_steps(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with each series' `stable_steps`: a stable run trains only as far as the last
    branch that will be trained."""
    table = table.copy()
    trained_starts = table["decay_start"].where(table["reason"] == "", 0)
    table["stable_steps"] = trained_starts.groupby(table["series_id"]).transform("max")
    return table


def trained_series(table: pd.DataFrame) -> list[str]:
    """The series with at least one branch to train (the others need no stable run)."""
    return sorted(trained_runs(table)["series_id"].unique())


def trained_runs(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["reason"] == ""].reset_index(drop=True)


def excluded_runs(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["reason"] != ""].reset_index(drop=True)


def schedule_name(cfg: StudyConfig) -> str:
    if cfg.schedule.kind == "cosine":
        return "cosine"
    return f"wsd-{cfg.schedule.decay_shape}-{format_number(cfg.schedule.decay_fraction)}"


def exclusion_reason(cfg: StudyConfig, row) -> str:
    if row.steps < 1:
        return "budget too small for one optimizer step"
    if row.steps < cfg.isoflop.min_steps:
        return f"{row.steps} steps < isoflop.min_steps={cfg.isoflop.min_steps}"
    limit = cfg.isoflop.max_tokens_per_param
    if limit and row.D / row.N > limit:
        return (f"{row.D / row.N:.0f} tokens per parameter > "
                f"isoflop.max_tokens_per_param={limit:g}")
    if cfg.schedule.kind == "wsd" and row.decay_start < row.warmup_steps:
        return (
            f"decay would start at step {row.decay_start}, inside the warmup "
            f"({row.warmup_steps} steps from training.warmup_tokens)"
        )
    return ""


def _check_every_budget_has_runs(cfg, table: pd.DataFrame) -> None:
    for budget in cfg.isoflop.budgets:
        rows = table[table["C"] == float(budget)]
        if not (rows["reason"] == "").any():
            reasons = rows["reason"]
            raise UserError(
                f"isoflop.budgets: budget {budget:.3g} gives no usable run for any size "
                f"(e.g. {reasons.iloc[0]})"
            )


def check_epochs(cfg: StudyConfig, table: pd.DataFrame, train_tokens: int) -> pd.DataFrame:
    """Add an `epochs` column; refuse a study whose trained runs repeat the corpus too often."""
    table = table.copy()
    table["epochs"] = table["D"] / train_tokens
    trained = trained_runs(table)
    worst = trained.loc[trained["epochs"].idxmax()]
    if worst["epochs"] > cfg.isoflop.max_epochs:
        raise UserError(
            f"isoflop.max_epochs: run {worst['run_id']} needs {worst['D']:,} tokens = "
            f"{worst['epochs']:.1f} epochs of the {train_tokens:,} training tokens "
            f"(limit {cfg.isoflop.max_epochs:g}); lower the budget, raise corpus.max_bytes "
            f"or isoflop.max_epochs"
        )
    return table


# CompleteP's depth keys: a run of another parametrization is computed without them, and
# leaving them out of its spec keeps the specs (and so the runs) of earlier studies unchanged
DEPTH_KEYS = ("base_depth", "alpha")


def run_parametrization(section: dict) -> dict:
    """The parametrization section as a run's spec holds it: CompleteP's depth keys only under
    CompleteP, `independent_weight_decay` only when on (so that the specs of studies written
    before these keys existed are unchanged)."""
    left_out = () if section["name"] == "completep" else DEPTH_KEYS
    if not section.get("independent_weight_decay"):
        left_out += ("independent_weight_decay",)
    return {key: value for key, value in section.items() if key not in left_out}


def series_spec(cfg: StudyConfig, table: pd.DataFrame, sid: str) -> RunSpec:
    """The resolved spec of one series: everything its stable run and branches need.

    Every label of the phase is listed, trained or not, so that the stable rule's outputs are the
    same for every series; `trained` says which branches run.
    """
    rows = table[table["series_id"] == sid]
    if rows.empty:
        raise UserError(f"unknown series {sid!r}")
    first = rows.iloc[0]
    size = SizeConfig(int(first.n_layer), int(first.n_embd), int(first.n_head))
    resolved = to_dict(cfg)
    phase = str(first.phase)
    return RunSpec(
        series_id=sid,
        phase=phase,
        # a later round's repeat carries its own seed (plan_sizes); other phases the study's
        seed=int(first.get("seed", cfg.seed)),
        model=to_dict(gpt_config(cfg, size)),
        parametrization=run_parametrization(resolved["parametrization"]),
        training=resolved["training"],
        schedule=resolved["schedule"],
        schedule_name=str(first.schedule),
        flops_convention=cfg.flops.convention,
        N=int(first.N),
        N_total=int(first.N_total),
        flops_per_token=float(first.flops_per_token),
        warmup_steps=int(first.warmup_steps),
        stable_steps=int(first.stable_steps),
        branches=tuple(
            BranchSpec(
                label=str(row.label),
                run_id=str(row.run_id),
                C=float(row.C),
                D=int(row.D),
                total_steps=int(row.steps),
                decay_start=int(row.decay_start),
                trained=row.reason == "",
            )
            for row in rows.itertuples()
        ),
        # the downstream task its decay branches are scored on at their final weights
        downstream=(resolved["downstream"]
                    if phase in SCORED_PHASES and cfg.downstream.enabled else None),
        # absent for the first round, so that its specs (and so its runs) stay as they were
        round=int(first.get("round", 0)) or None,
    )
