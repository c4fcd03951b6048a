"""Downstream accuracy beyond loss: a multiple-choice task from the held-out split, and a sigmoid
from validation loss to accuracy (LLaMA 3, arXiv:2407.21783, Sec. 3.2.1, second step).

LLaMA 3 predicts a benchmark score in two steps: compute -> negative log-likelihood (the
compute-optimal loss law of `phases.recipe`), then that loss -> accuracy through a sigmoid
fitted on the ladder's runs. Here the benchmark is one the corpus itself allows, offline:

The task (HellaSwag-like, built from `val.bin`, so no run has trained on it): `items` spans of
`context_tokens + continuation_tokens` tokens, evenly spaced and non-overlapping through the file.
Item i's candidates are its own continuation and those of items i + j * (items // choices)
(mod items), j = 1 .. choices - 1: spans far away in the file, so a distractor is fluent text of
the same length that does not follow the context. The true candidate sits at a position drawn from
`np.random.default_rng(TASK_SEED)`: the same task for every run of every phase and seed.

Scoring (`accuracy`): each candidate's summed log-probability of its continuation tokens given the
context (the lengths are equal, so the sum ranks as the mean does); the argmax is the answer. A tie
between k top candidates, the true one among them, scores 1/k: the expectation of a random
tie-break, but deterministic; a model with uniform logits thus scores chance = 1/choices exactly.

The fit (`fit_sigmoid`): acc(L) = chance + (top - chance) / (1 + exp(k (L - L_mid))), with
chance <= top <= 1 and k > 0, by bounded least squares (scipy curve_fit) from a grid of starts,
with a bootstrap over the points for 95% intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from scalinglab.config import DownstreamConfig
from scalinglab.errors import UserError

TASK_SEED = 0
PARAM_NAMES = ("top", "k", "L_mid")
MIN_POINTS = 4  # three parameters: at least one degree of freedom left


def check_split(cfg: DownstreamConfig, val_tokens: int) -> None:
    """The validation split must hold every item's span (`isoflop plan` checks it before any run
    trains, from the token counts in meta.json)."""
    if cfg.enabled and val_tokens // cfg.items < cfg.span:
        raise UserError(f"downstream.items: {cfg.items} items of {cfg.span} tokens need "
                        f"{cfg.items * cfg.span:,} validation tokens, the split has "
                        f"{val_tokens:,}")


@dataclass(frozen=True)
class Task:
    sequences: np.ndarray  # (items, choices, context + continuation) int64 token ids
    answer: np.ndarray  # (items,) position of the true continuation among the choices
    context_tokens: int

    @property
    def chance(self) -> float:
        return 1.0 / self.sequences.shape[1]


def build_task(tokens: np.ndarray, cfg: DownstreamConfig) -> Task:
    """The task from a 1-D array of validation tokens (a memmap of `val.bin` will do)."""
    n = len(tokens)
    check_split(cfg, n)
    stride = n // cfg.items
    starts = np.arange(cfg.items, dtype=np.int64) * stride
    spans = np.asarray(tokens[starts[:, None] + np.arange(cfg.span)], dtype=np.int64)
    context, continuation = spans[:, :cfg.context_tokens], spans[:, cfg.context_tokens:]
    step = cfg.items // cfg.choices
    # row 0 of `others` is the item itself, then its distractors far away in the file
    others = (np.arange(cfg.items)[:, None] + step * np.arange(cfg.choices)[None, :]) % cfg.items
    answer = np.random.default_rng(TASK_SEED).integers(0, cfg.choices, size=cfg.items)
    order = np.empty_like(others)
    for i in range(cfg.items):  # put the true continuation (column 0) at position answer[i]
        rest = [c for c in range(cfg.choices) if c != answer[i]]
        order[i, answer[i]] = others[i, 0]
        order[i, rest] = others[i, 1:]
    candidates = continuation[order]  # (items, choices, continuation)
    contexts = np.broadcast_to(context[:, None, :], (*order.shape, cfg.context_tokens))
    return Task(np.concatenate([contexts, candidates], axis=2), answer, cfg.context_tokens)


def task_from_file(val_bin, dtype: str, cfg: DownstreamConfig) -> Task:
    return build_task(np.memmap(val_bin, dtype=np.dtype(dtype), mode="r"), cfg)


def accuracy(model, task: Task, device, batch: int = 64, autocast=None) -> float:
    """The fraction of items whose true continuation gets the highest summed log-probability
    (ties: 1/k each, see the module docstring)."""
    import contextlib

    import torch

    items, choices, length = task.sequences.shape
    flat = torch.from_numpy(task.sequences.reshape(-1, length))
    ctx = task.context_tokens
    scores = torch.empty(len(flat), dtype=torch.float64)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(flat), batch):
                seq = flat[i:i + batch].to(device)
                # position t predicts token t + 1: the continuation is predicted from ctx - 1 on,
                # the last length - ctx positions of the input
                with autocast or contextlib.nullcontext():
                    logits, _ = model(seq[:, :-1], last=length - ctx)  # (B, length - ctx, V)
                logp = torch.log_softmax(logits.float(), dim=-1)
                target = seq[:, ctx:].unsqueeze(-1)
                scores[i:i + batch] = logp.gather(-1, target).squeeze(-1).sum(-1).double().cpu()
    finally:
        model.train(was_training)
    return score_choices(scores.view(items, choices).numpy(), task.answer)


def score_choices(scores: np.ndarray, answer: np.ndarray) -> float:
    """Mean credit of (items, choices) scores: 1/k when the true one is among k tied best."""
    best = scores.max(axis=1, keepdims=True)
    top = scores == best
    hit = top[np.arange(len(answer)), answer]
    return float(np.mean(hit / top.sum(axis=1)))


# -- the sigmoid from loss to accuracy -----------------------------------------------------------
def sigmoid(loss, chance: float, top, k, l_mid):
    z = np.clip(np.asarray(k) * (np.asarray(loss, float) - np.asarray(l_mid)), -500, 500)
    return chance + (np.asarray(top) - chance) / (1.0 + np.exp(z))


def _fit_once(loss: np.ndarray, acc: np.ndarray, chance: float, starts) -> np.ndarray | None:
    from scipy.optimize import curve_fit

    span = max(float(np.ptp(loss)), 1e-3)
    lower = [chance, 1e-6, loss.min() - 5 * span]
    upper = [1.0, 1e3 / span, loss.max() + 5 * span]
    best, best_sse = None, math.inf
    for p0 in starts:
        p0 = np.clip(p0, np.add(lower, 1e-9), np.subtract(upper, 1e-9))
        try:
            params, _ = curve_fit(lambda x, t, k, m: sigmoid(x, chance, t, k, m), loss, acc,
                                  p0=p0, bounds=(lower, upper), maxfev=5000)
        except (RuntimeError, ValueError):
            continue
        sse = float(np.sum((sigmoid(loss, chance, *params) - acc) ** 2))
        if sse < best_sse:
            best, best_sse = params, sse
    return best


def fit_sigmoid(losses, accuracies, chance: float, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Fit acc(L) on the finite (loss, accuracy) points; replicates resample the points."""
    loss, acc = np.asarray(losses, float), np.asarray(accuracies, float)
    ok = np.isfinite(loss) & np.isfinite(acc)
    if ok.sum() < MIN_POINTS:
        raise UserError(f"downstream fit: {ok.sum()} runs with both a finite loss and an "
                        f"accuracy, needs at least {MIN_POINTS} (is downstream.enabled on, and "
                        f"did the runs diverge?)")
    loss, acc = loss[ok], acc[ok]
    span = max(float(np.ptp(loss)), 1e-3)
    top0 = float(np.clip(acc.max() + 0.05, chance, 1.0))
    starts = [(top0, k / span, m) for k in (1.0, 4.0, 16.0)
              for m in np.quantile(loss, [0.25, 0.5, 0.75])] + [(1.0, 4.0 / span, loss.min())]
    point = _fit_once(loss, acc, chance, starts)
    if point is None:
        raise UserError("downstream fit: the sigmoid did not converge from any start")
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(loss), size=len(loss))
        if np.ptp(loss[idx]) == 0:
            continue  # one loss only: the slope is not identified
        params = _fit_once(loss[idx], acc[idx], chance, [point])
        if params is not None:
            samples.append(params)
    samples = np.array(samples, float).reshape(-1, len(PARAM_NAMES))
    ci = ({name: [float(v) for v in np.percentile(samples[:, i], [2.5, 97.5])]
           for i, name in enumerate(PARAM_NAMES)} if len(samples) else None)
    return {
        "law": "acc(L) = chance + (top - chance) / (1 + exp(k * (L - L_mid)))",
        **dict(zip(PARAM_NAMES, map(float, point), strict=True)),
        "chance": float(chance),
        "ci": ci,
        "n_points": int(len(loss)),
        "points": {"loss": loss.tolist(), "accuracy": acc.tolist()},
        "rmse": float(np.sqrt(np.mean((sigmoid(loss, chance, *point) - acc) ** 2))),
        "bootstrap": {"n": n_boot, "seed": seed, "n_failed": n_boot - len(samples),
                      "level": 0.95, "names": list(PARAM_NAMES),
                      "samples": [[float(f"{v:.7g}") for v in row] for row in samples]},
    }


def predict(fit: dict, loss: float) -> float:
    return float(sigmoid(loss, fit["chance"], fit["top"], fit["k"], fit["L_mid"]))


def predict_interval(fit: dict, loss_interval) -> list[float]:
    """A 95% interval of the accuracy for a loss known to lie in `loss_interval` (its own 95%
    interval): accuracy falls with loss, so the lower end is the 2.5th percentile of the
    bootstrap sigmoids at the higher loss, the upper end the 97.5th at the lower loss. Both
    uncertainties widen it (the loss's through its ends, the fit's through the replicates): a
    conservative band rather than one propagated jointly, which would need the two bootstraps'
    correlation that nothing here measures."""
    lo, hi = sorted(float(v) for v in loss_interval)
    samples = np.asarray(fit["bootstrap"]["samples"], float).reshape(-1, len(PARAM_NAMES))
    if len(samples) == 0:
        return [predict(fit, hi), predict(fit, lo)]
    at = [sigmoid(x, fit["chance"], samples[:, 0], samples[:, 1], samples[:, 2]) for x in (hi, lo)]
    return [float(np.percentile(at[0], 2.5)), float(np.percentile(at[1], 97.5))]


# -- the recipe's prediction and its check (phases.recipe) ------------------------------------
def recipe_prediction(fit: dict, loss: float, loss_ci) -> dict:
    """The recipe's accuracy at its predicted loss, with the interval of `predict_interval`."""
    finite = all(math.isfinite(v) for v in loss_ci)
    return {"predicted_accuracy": predict(fit, loss),
            "predicted_accuracy_ci": (predict_interval(fit, loss_ci) if finite
                                      else [float("nan")] * 2),
            "accuracy_chance": fit["chance"]}


def validation_check(recipe: dict, record: dict) -> dict:
    """The predicted accuracy against the validation run's, when the recipe has one and the run
    was scored (downstream on); the errors in accuracy points (percentage points)."""
    if "predicted_accuracy" not in recipe or record.get("final_accuracy") is None:
        return {}
    predicted, actual = float(recipe["predicted_accuracy"]), float(record["final_accuracy"])
    low, high = recipe["predicted_accuracy_ci"]
    return {"predicted_accuracy": predicted, "predicted_accuracy_ci": [low, high],
            "actual_accuracy": actual, "accuracy_chance": recipe["accuracy_chance"],
            "accuracy_error_points": 100 * (actual - predicted),
            "abs_accuracy_error_points": 100 * abs(actual - predicted),
            "accuracy_inside_interval": bool(low <= actual <= high)}
