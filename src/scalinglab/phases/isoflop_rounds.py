"""The predict-train-adjust loop of the IsoFLOP phase as rounds of the DAG.

Round 0 is the configured grid (`study.plan_isoflop`). After its fit, a Snakemake checkpoint
runs `plan_round`, which reads the fit and plans round 1:

- **refinement sizes**: a budget whose minimum sits at an edge of its grid needs a size beyond
  that edge; one whose N_opt interval is wider than `adaptive.max_interval_ratio` needs a size
  near its N_opt. Each need picks the nearest unused size of the `adaptive.sizes` pool (in log
  N); at most `adaptive.max_new_sizes` per round, edges first, then the sizes most budgets asked
  for. A new size trains a stable run plus a branch per budget, as the first round's sizes do,
  but only up to the largest budget that asked for it: the stable run's length is set by its
  last budget, and a budget above every asker has its interval already, so a run there would
  be the round's most costly and least needed one. (So a later round does not extend it: a
  pool size is trained once.) A size none of whose askers it can train (too few steps, too many
  tokens per parameter) gives its place to the next.
- **noise seeds** (round 1 only): the trained run nearest each budget's N_opt is repeated with
  `isoflop.noise_seeds` other seeds (init and data order). One repeat series per (size, seed)
  trains only the branches of the budgets that size is nearest for, so it stops at the last.

Later rounds (`adaptive.rounds` > 1) refine again from the fit over every round before. Every
function here is pure: the fit and the runs come in as data, a plan table goes out.
"""

from __future__ import annotations

import math

import pandas as pd

from scalinglab.config import SizeConfig, StudyConfig
from scalinglab.errors import UserError
from scalinglab.model.flops import model_counts
from scalinglab.phases import study

NOT_NEAREST = "a noise-seed repeat trains only the budgets its size is nearest the optimum of"


def round_count(cfg: StudyConfig) -> int:
    """Checkpoint rounds after the first grid: `adaptive.rounds`, or one for the noise seeds."""
    return max(cfg.adaptive.rounds, 1 if cfg.isoflop.noise_seeds else 0)


def size_n(cfg: StudyConfig, size: SizeConfig) -> int:
    return model_counts(study.gpt_config(cfg, size), cfg.flops.convention).N


def _finite(value) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def budget_needs(fit: dict, max_interval_ratio: float) -> list[dict]:
    """What each budget of a fit asks of the next round: {C, why, log_n, side}.

    `side` is "below" or "above" for an edge (a size beyond the edge), "near" for a wide
    interval (a size near N_opt); a budget that asks nothing is not listed.
    """
    needs = []
    for budget in fit["budgets"]:
        sizes = budget["sizes"]
        if budget.get("edge"):
            side = "below" if budget["edge"] == "low" else "above"
            edge_n = min(sizes) if side == "below" else max(sizes)
            needs.append({"C": budget["C"], "why": f"minimum at the {budget['edge']} edge",
                          "log_n": math.log(edge_n), "side": side})
            continue
        if not _finite(budget.get("N_opt")):
            continue  # no vertex (a parabola without curvature): nothing to aim a size at
        low, high = budget.get("N_opt_ci") or (None, None)
        if low and high and high / low > max_interval_ratio:
            needs.append({"C": budget["C"],
                          "why": f"N_opt interval ratio {high / low:.2f} > "
                                 f"adaptive.max_interval_ratio={max_interval_ratio:g}",
                          "log_n": math.log(budget["N_opt"]), "side": "near"})
    return needs


ABOVE_ASKERS = "a refinement size trains only up to the largest budget that asked for it"


def choose_sizes(cfg: StudyConfig, needs: list[dict], used: set[str]) -> list[SizeConfig]:
    """The pool sizes that answer `needs`, at most `adaptive.max_new_sizes`: those beyond an edge
    first, then the most asked for (the smaller on a tie).

    `used`: size labels already trained (any round); a pool size is never trained twice.
    """
    return [size for size, _ in ranked_with_askers(cfg, needs, used)[
        : cfg.adaptive.max_new_sizes]]


def ranked_with_askers(cfg: StudyConfig, needs: list[dict],
                       used: set[str]) -> list[tuple[SizeConfig, list[float]]]:
    """Every pool size some need picked, in `choose_sizes`' order, each with the budgets C whose
    needs picked it."""
    pool = [(size, math.log(size_n(cfg, size))) for size in cfg.adaptive.sizes
            if study.size_label(size) not in used]
    votes: dict[str, list] = {}
    for need in needs:
        if need["side"] == "below":
            candidates = [p for p in pool if p[1] < need["log_n"]]
        elif need["side"] == "above":
            candidates = [p for p in pool if p[1] > need["log_n"]]
        else:
            candidates = pool
        if not candidates:
            continue
        size, log_n = min(candidates, key=lambda p: abs(p[1] - need["log_n"]))
        entry = votes.setdefault(study.size_label(size), [size, 0, 0, log_n, []])
        entry[1] += need["side"] != "near"
        entry[2] += 1
        entry[4].append(need["C"])
    # a budget without a located minimum first, then the sizes most budgets asked for
    ranked = sorted(votes.values(), key=lambda v: (-v[1], -v[2], v[3]))
    return [(size, askers) for size, _, _, _, askers in ranked]


def nearest_runs(fit: dict, runs: pd.DataFrame, seed: int) -> dict[tuple, list[str]]:
    """For each interior budget of the fit, the trained size (of the study's seed) nearest its
    N_opt in log N: {(n_layer, n_embd, n_head): [budget labels]}."""
    first = runs[(runs["seed"] == seed) & runs["loss"].notna()]
    chosen: dict[tuple, list[str]] = {}
    for budget in fit["budgets"]:
        if budget.get("edge") or not _finite(budget.get("N_opt")):
            continue
        rows = first[(first["C"] - budget["C"]).abs() <= 1e-6 * budget["C"]]
        if rows.empty:
            continue
        distance = (rows["N"].map(math.log) - math.log(budget["N_opt"])).abs()
        row = rows.loc[distance.idxmin()]
        key = (int(row["n_layer"]), int(row["n_embd"]), int(row["n_head"]))
        chosen.setdefault(key, []).append(str(row["label"]))
    return chosen


def _leave_out(table: pd.DataFrame, rows, reason: str) -> pd.DataFrame:
    """`table` with the `rows` still trained left out for `reason`, its stable runs shortened
    to the branches that remain."""
    table = table.copy()
    table.loc[rows & (table["reason"] == ""), "reason"] = reason
    return study.with_stable_steps(table)


def plan_round(cfg: StudyConfig, fit: dict, runs: pd.DataFrame, round_: int,
               train_tokens: int) -> pd.DataFrame:
    """The run table of refinement round `round_` (>= 1), from the fit of the rounds before and
    their runs.csv. Empty (with the plan's columns) when the round asks for nothing."""
    if round_ < 1:
        raise UserError(f"refinement rounds count from 1, got {round_}")
    parts = []
    if round_ <= cfg.adaptive.rounds:
        used = {study.size_label(SizeConfig(int(r.n_layer), int(r.n_embd), int(r.n_head)))
                for r in runs.itertuples()}
        needs = budget_needs(fit, cfg.adaptive.max_interval_ratio)
        added = 0
        for size, askers in ranked_with_askers(cfg, needs, used):
            if added == cfg.adaptive.max_new_sizes:
                break
            table = study.plan_sizes(cfg, [size], round_=round_)
            table = _leave_out(table, table["C"] > max(askers) * (1 + 1e-9), ABOVE_ASKERS)
            if study.trained_runs(table).empty:
                continue  # every budget that asked for it is out of its reach: the next size
            parts.append(table)
            added += 1
    if round_ == 1:
        for key, labels in nearest_runs(fit, runs, cfg.seed).items():
            size = SizeConfig(*key)
            for k in range(1, cfg.isoflop.noise_seeds + 1):
                table = study.plan_sizes(cfg, [size], seed=cfg.seed + k, round_=round_)
                parts.append(_leave_out(table, ~table["label"].isin(labels), NOT_NEAREST))
    if not parts:
        return pd.DataFrame(columns=study.plan_sizes(cfg, cfg.model.sizes[:1]).columns)
    table = pd.concat(parts, ignore_index=True)
    if study.trained_runs(table).empty:
        return table
    return study.check_epochs(cfg, table, train_tokens)


def read_plan(path) -> pd.DataFrame:
    """A round's plan.csv as `plan_round` made it (a trained row's empty `reason` stays "")."""
    return pd.read_csv(path, keep_default_na=False, na_values={"loss": [""]})


def round_run_jsons(table: pd.DataFrame, runs_dir: str) -> tuple[list[str], list[str]]:
    """(stable run.json, branch run.json) paths of a round's plan under `runs_dir`."""
    trained = study.trained_runs(table) if len(table) else table
    if trained.empty:
        return [], []
    stable = [f"{runs_dir}/{sid}/stable/run.json" for sid in sorted(trained["series_id"].unique())]
    branches = [f"{runs_dir}/{row.series_id}/{row.label}/run.json" for row in trained.itertuples()]
    return stable, branches
