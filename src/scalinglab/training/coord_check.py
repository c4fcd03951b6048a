"""Coordinate check: do activation scales stay put as the model widens?

A coordinate check (Yang et al., Tensor Programs V, arXiv:2203.03466, Fig. 5; microsoft/mup's
`get_coord_data`) trains the same model at several widths for a few steps at one fixed learning
rate and records the size of each layer's output *per coordinate*. Under a correct muP every
curve is flat in width: the first updates move each coordinate by O(1), whatever the width.
Under SP with Adam they grow: an Adam update has O(1) entries whatever the gradient, and a matrix
sums fan_in of them, so one step moves a hidden unit, and above all a logit, by ~ lr * width.

The sites are the ones `GPT.forward(..., activations=...)` records: "emb", "h.{i}.attn",
"h.{i}.mlp" (branch outputs as added to the stream) and "logits". The size is the RMS,
sqrt(mean(x^2)) over batch, positions and features, measured on one fixed probe batch after
0, 1, ..., `steps` optimizer updates, so that only the weights change between rows.

`growth` condenses a table into the ratio RMS(widest) / RMS(narrowest) at one (site, step);
`check` turns that into a verdict, and `verdict` into the workflow's `coord_check.json` (with the
per-site slopes and whether each parametrization behaved as expected). The test suite asserts
both sides (muP flat, SP growing) and that a muP without its 1/m logit multiplier fails: a check
that cannot fail proves nothing.

`depth_check` is the same experiment across depth at one width (CompleteP, Dey et al.,
arXiv:2505.01618, whose coordinate checks also vary depth): it also records "resid", the residual
stream as it enters the final LayerNorm. At init the GPT-2 1/sqrt(2 n_layer) projection init
keeps it flat under muP too; after a few Adam steps every block has moved it by O(lr) in a
common direction, so under muP it grows with the number of blocks, while CompleteP's m_d^-alpha
branch multiplier keeps the sum O(1). `growth(..., axis="depth")` and `check` judge it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from scalinglab.errors import UserError
from scalinglab.model.gpt import GPT, GPTConfig
from scalinglab.model.parametrization import (
    ParametrizationConfig,
    init_weights,
    model_multipliers,
    param_groups,
)
from scalinglab.training.adamw import AdamW

COLUMNS = ["parametrization", "width", "seed", "step", "site", "rms"]
# muP keeps the logits within this factor across an 8x width range; SP grows far beyond it.
# (Measured at step 3 over widths 64-512: the workflow's check on the default corpus gives muP
# 1.01x, SP 3.3x; the tests' random tokens give muP ~0.8-0.9x, SP 8-13x, a broken muP 5-6x.)
MAX_FLAT_GROWTH = 2.0
# What a correct implementation gives: muP passes (flat logits), SP fails (they grow with width).
# CompleteP's width rules are muP's.
EXPECTED_TO_PASS = {"sp": False, "mup": True, "completep": True}
# Across depth (`depth_check`): CompleteP keeps the residual stream ("resid") flat, muP does not.
# Measured with depth_check's defaults (width 64, lr 3e-3, depths 2-8, random tokens), seeds
# 0-4, growth at step 4: muP 2.5-4.3x, CompleteP 0.65-0.89x, a CompleteP without its residual
# multiplier 3.3-6.7x; at init (step 0) muP 1.0x, CompleteP 0.87x.
DEPTH_EXPECTED_TO_PASS = {"mup": False, "completep": True}
DEPTH_COLUMNS = ["parametrization", "depth", "seed", "step", "site", "rms"]


@dataclass(frozen=True)
class CoordCheckShape:
    """Everything but the width: a deliberately tiny model, so the check runs in seconds."""

    n_layer: int = 2
    n_head: int = 4
    """Fixed head count, so d_head grows with width and muP's 1/d_head attention is exercised."""
    block_size: int = 32
    batch_size: int = 8
    vocab_size: int = 256
    mlp_ratio: int = 4


def _batches(
    shape: CoordCheckShape, steps: int, seed: int, data_dir: Path | None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`steps` training batches, then one probe batch: the same for every width.

    From a token folder (train.bin, meta.json) when given, else uniformly random tokens: the
    scale argument does not depend on what the text is, and tests need no data files.
    """
    n = steps + 1
    if data_dir is None:
        gen = torch.Generator().manual_seed(seed)
        seqs = torch.randint(0, shape.vocab_size, (n, shape.batch_size, shape.block_size + 1),
                             generator=gen)
        return [(s[:, :-1].contiguous(), s[:, 1:].contiguous()) for s in seqs]
    from scalinglab.training.batches import TokenData

    meta = json.loads((Path(data_dir) / "meta.json").read_text())
    data = TokenData(Path(data_dir) / "train.bin", meta["dtype"], shape.block_size)
    return [data.train_batch(step, shape.batch_size, seed) for step in range(n)]


def _rms_by_site(activations: dict[str, torch.Tensor]) -> dict[str, float]:
    return {site: float(x.float().pow(2).mean().sqrt()) for site, x in activations.items()}


def coord_check(
    widths: Sequence[int], parametrizations: dict[str, ParametrizationConfig], *,
    lr: float = 1e-2, **options,
) -> pd.DataFrame:
    """RMS of every activation site after 0..`steps` AdamW steps at learning rate `lr`.

    `parametrizations` maps a label to its config (e.g. {"sp": ..., "mup": ...}). `options`
    are the keywords of `_sweep`: `steps` (4), `seeds` ((0,)), `shape` (`CoordCheckShape()`),
    `data_dir` (a token folder, else random tokens) and `adjust`. `adjust(label, gpt_config)`
    may rewrite a model's config before it is built: the tests use it to break muP on purpose.
    Returns one row per (parametrization, width, seed, step, site) with columns `COLUMNS`. No
    weight decay and no clipping: the check looks at raw updates.
    """
    return _sweep("width", widths, parametrizations, None, lr=lr, **options)


def depth_check(
    depths: Sequence[int], parametrizations: dict[str, ParametrizationConfig], *,
    width: int = 64, lr: float = 3e-3, **options,
) -> pd.DataFrame:
    """`coord_check` across depth: the same width, `shape` with n_layer set to each depth;
    `options` as there.

    Besides `GPT.forward`'s sites, records "resid": the residual stream entering `ln_f` (a
    forward pre-hook, so the model file stays as it is). Columns `DEPTH_COLUMNS`.
    """
    return _sweep("depth", depths, parametrizations, width, lr=lr, **options)


def _sweep(
    axis: str,
    sizes: Sequence[int],
    parametrizations: dict[str, ParametrizationConfig],
    width: int | None,
    *,
    lr: float,
    steps: int = 4,
    seeds: Sequence[int] = (0,),
    shape: CoordCheckShape = CoordCheckShape(),
    data_dir: str | Path | None = None,
    adjust: Callable[[str, GPTConfig], GPTConfig] | None = None,
) -> pd.DataFrame:
    """The rows of `coord_check` (`axis` "width": `sizes` are widths) or `depth_check` ("depth":
    `sizes` are depths, all at `width`; None for widths)."""
    by_depth = axis == "depth"
    _check_args([width, width] if by_depth else sizes, steps, lr, shape)
    if by_depth and (len(sizes) < 2 or any(not isinstance(d, int) or d <= 0 for d in sizes)):
        raise UserError(f"coord-check: depths must be two or more positive integers, got "
                        f"{list(sizes)}")
    if data_dir is not None:
        shape = replace(shape, vocab_size=_vocab_size(Path(data_dir)))
    rows = []
    for seed in seeds:
        batches = _batches(shape, steps, seed, None if data_dir is None else Path(data_dir))
        for label, pcfg in parametrizations.items():
            for size in sizes:
                at = (width, replace(shape, n_layer=size)) if by_depth else (size, shape)
                model, optimizer = _build(label, pcfg, *at, lr, seed, adjust)
                rows += [{"parametrization": label, axis: size, "seed": seed, **row}
                         for row in _trajectory(model, optimizer, batches, steps, resid=by_depth)]
    return pd.DataFrame(rows, columns=DEPTH_COLUMNS if by_depth else COLUMNS)


def _trajectory(model, optimizer, batches, steps: int, resid: bool = False) -> list[dict]:
    """{step, site, rms} rows on the probe batch (the last of `batches`) after 0..`steps`
    updates on the others; with `resid`, also the residual stream entering `ln_f`."""
    probe_x, _ = batches[-1]
    entering_ln_f: dict[str, torch.Tensor] = {}
    hook = None
    if resid:  # the last forward pass before a read is the probe's
        hook = model.transformer.ln_f.register_forward_pre_hook(
            lambda _module, args: entering_ln_f.__setitem__("resid", args[0].detach()))
    rows = []
    try:
        for step in range(steps + 1):
            if step > 0:
                x, y = batches[step - 1]
                _, loss = model(x, y)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            acts: dict[str, torch.Tensor] = {}
            with torch.no_grad():
                model(probe_x, activations=acts)
            acts.update(entering_ln_f)
            rows += [{"step": step, "site": site, "rms": rms}
                     for site, rms in _rms_by_site(acts).items()]
    finally:
        if hook is not None:
            hook.remove()
    return rows


def _build(label, pcfg, width, shape, lr, seed, adjust):
    if width % shape.n_head:
        raise UserError(f"coord-check: width {width} is not divisible by n_head={shape.n_head}")
    cfg = GPTConfig(
        vocab_size=shape.vocab_size, block_size=shape.block_size, n_layer=shape.n_layer,
        n_embd=width, n_head=shape.n_head, mlp_ratio=shape.mlp_ratio,
        **model_multipliers(pcfg, shape.n_layer, width, shape.n_head),
    )
    if adjust is not None:
        cfg = adjust(label, cfg)
    model = GPT(cfg)
    init_weights(model, pcfg, torch.Generator().manual_seed(seed))
    optimizer = AdamW(param_groups(model, pcfg, lr, weight_decay=0.0), lr=lr)
    return model, optimizer


def _vocab_size(data_dir: Path) -> int:
    try:
        return int(json.loads((data_dir / "meta.json").read_text())["vocab_size"])
    except FileNotFoundError:
        raise UserError(f"{data_dir / 'meta.json'}: token metadata not found") from None


def _check_args(widths, steps, lr, shape) -> None:
    if len(widths) < 2 or any(not isinstance(w, int) or w <= 0 for w in widths):
        raise UserError(f"coord-check: widths must be two or more positive integers, got "
                        f"{list(widths)}")
    if steps < 1:
        raise UserError(f"coord-check: steps must be >= 1, got {steps}")
    if not lr > 0:
        raise UserError(f"coord-check: lr must be > 0, got {lr}")


def growth(table: pd.DataFrame, site: str = "logits", step: int = 3,
           axis: str = "width") -> dict[str, float]:
    """Per parametrization: RMS at the widest width / RMS at the narrowest, at (site, step),
    averaged over seeds; 1 is perfectly flat. `axis="depth"` compares the deepest with the
    shallowest model of a `depth_check` table instead."""
    rows = table[(table["site"] == site) & (table["step"] == step)]
    if rows.empty:
        raise UserError(f"coord-check: no rows for site {site!r} at step {step}")
    out = {}
    for label, group in rows.groupby("parametrization", sort=False):
        by_axis = group.groupby(axis)["rms"].mean().sort_index()
        out[str(label)] = float(by_axis.iloc[-1] / by_axis.iloc[0])
    return out


def check(table: pd.DataFrame, site: str = "logits", step: int = 3,
          max_growth: float = MAX_FLAT_GROWTH, axis: str = "width") -> dict[str, bool]:
    """Per parametrization: True when the (site, step) RMS grows by less than `max_growth`
    across the widths (the muP expectation), False when it grows more (the SP expectation);
    across the depths with `axis="depth"` (CompleteP flat, muP growing)."""
    return {label: ratio < max_growth
            for label, ratio in growth(table, site, step, axis).items()}


def width_slopes(table: pd.DataFrame, step: int) -> pd.DataFrame:
    """Slope of log RMS against log width per (parametrization, site) at `step`: ~0 is flat,
    ~1 grows like the width. A compact summary of the whole table for the CLI and README."""
    rows = []
    at = table[table["step"] == step].groupby(["parametrization", "site", "width"], sort=False)
    means = at["rms"].mean().reset_index()
    for (label, site), group in means.groupby(["parametrization", "site"], sort=False):
        slope = np.polyfit(np.log(group["width"]), np.log(group["rms"]), 1)[0]
        rows.append({"parametrization": label, "site": site, "slope": float(slope)})
    return pd.DataFrame(rows)


def verdict(table: pd.DataFrame, step: int = 3, site: str = "logits",
            max_growth: float = MAX_FLAT_GROWTH,
            expected: dict[str, bool] | None = None) -> dict:
    """The content of `results/muP/coord_check.json`: per parametrization the `site` RMS growth
    (widest / narrowest width) at `step`, the slope of log RMS against log width of every site,
    and `passes` (growth < `max_growth`); then `expected` ({sp: false, mup: true} by default)
    and `as_expected`, true when every parametrization with an expectation met it. Only
    parametrizations in the table are judged."""
    expected = EXPECTED_TO_PASS if expected is None else expected
    ratios = growth(table, site, step)
    slopes = width_slopes(table, step)
    out = {"site": site, "step": step, "max_flat_growth": max_growth,
           "widths": sorted(int(w) for w in table["width"].unique()), "parametrizations": {}}
    for label, ratio in ratios.items():
        at = slopes[slopes["parametrization"] == label]
        passes = bool(ratio < max_growth)
        out["parametrizations"][label] = {
            "growth": ratio, "passes": passes,
            "slopes": dict(zip(at["site"], at["slope"].tolist(), strict=True)),
            "expected": expected.get(label),
            "as_expected": None if label not in expected else passes == expected[label],
        }
    judged = {k: v for k, v in expected.items() if k in ratios}
    out["expected"] = judged
    out["as_expected"] = bool(judged) and all(
        out["parametrizations"][k]["passes"] == v for k, v in judged.items())
    return out
