"""Loss-curve laws that take the learning-rate schedule as input: the Multi-Power Law and
Tissue et al.'s annealing law. Pure functions on numpy arrays (numpy, scipy only).

A curve is the LR at every optimizer step 0..T (`lr[i]` is the LR of step i) and the loss at
some evaluation steps t (1 <= t <= T). Both laws are sums over the LR trace:

    S1(t)   = sum_{i=1..t} lr[i]                      (the "forward area")
    S_k(t)  = sum_{i=k..t} lr[i]

Multi-Power Law (Luo et al., ICLR 2025, arXiv 2503.12811), 7 parameters:

    L(t)  = L0 + A * S1(t)^-alpha - LD(t)
    LD(t) = B * sum_{k=1..t} (lr[k-1] - lr[k]) * G(lr[k]^-gamma * S_k(t)),
    G(x)  = 1 - (C x + 1)^-beta

Tissue et al. 2024 (arXiv 2408.11029), 4 parameters and a fixed decay factor lambda:

    L(t)  = L0 + A * S1(t)^-alpha - C * S2(t),
    S2(t) = sum_{i=1..t} m_i,   m_i = lambda * m_{i-1} + (lr[i-1] - lr[i]),   m_0 = 0

Only steps where the LR changes add to LD, so the MPL is evaluated on the (evaluation step x
change point) matrix, in row blocks, never on all (t, k) pairs. The LR is used in the units
given (upstream's parameters are for raw LRs such as 3e-4). A warmup is part of the trace: its
rising LR makes lr[k-1] - lr[k] negative, as in upstream's own fits.

Fitting the law to training curves, and its bootstrap, are in `scalinglab.fitting.schedule_fit`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FORMS = ("mpl", "tissue")
PARAM_NAMES = {
    "mpl": ("L0", "A", "alpha", "B", "C", "beta", "gamma"),
    "tissue": ("L0", "A", "alpha", "C"),
}
FORMULAS = {
    "mpl": "L(t) = L0 + A*S1(t)^-alpha - B*sum_k (lr[k-1]-lr[k])*"
    "(1-(C*lr[k]^-gamma*S_k(t)+1)^-beta)",
    "tissue": "L(t) = L0 + A*S1(t)^-alpha - C*S2(t), S2 = sum_i m_i, m_i = lambda*m_{i-1} + "
    "(lr[i-1]-lr[i])",
}
TISSUE_LAMBDA = 0.999  # Tissue et al.'s recommended decay factor; held fixed, not fitted
BLOCK_ENTRIES = 1 << 16  # (rows x change points) per block: 512 kB arrays stay in cache
# An LR of exactly 0 would make lr^-gamma infinite; it is taken as this fraction of the peak
# (its S_k(t) is then 0 until the LR rises again, so G = 0 and the choice does not matter).
ZERO_LR_FLOOR = 1e-12


@dataclass(frozen=True)
class Curve:
    """One run: its LR at every step 0..T and (for fitting) its loss at evaluation steps."""

    lr: np.ndarray
    steps: np.ndarray
    loss: np.ndarray | None = None
    name: str = ""

    def __post_init__(self):
        lr = np.asarray(self.lr, float)
        steps = np.asarray(self.steps, np.int64)
        object.__setattr__(self, "lr", lr)
        object.__setattr__(self, "steps", steps)
        if self.loss is not None:
            object.__setattr__(self, "loss", np.asarray(self.loss, float))
        if lr.ndim != 1 or len(lr) < 2 or not np.all(np.isfinite(lr)) or np.any(lr < 0):
            raise ValueError(f"{self.name}: lr must be a finite, non-negative 1-D trace")
        if steps.ndim != 1 or len(steps) == 0 or np.any(np.diff(steps) <= 0):
            raise ValueError(f"{self.name}: evaluation steps must be strictly increasing")
        if steps[0] < 1 or steps[-1] >= len(lr):
            raise ValueError(f"{self.name}: evaluation steps must lie in 1..{len(lr) - 1}")
        if self.loss is not None and self.loss.shape != steps.shape:
            raise ValueError(f"{self.name}: {len(self.loss)} losses for {len(steps)} steps")


def forward_area(lr: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """S1(t) = sum of lr over steps 1..t, at each t in `steps`."""
    cum = np.cumsum(lr)
    return cum[steps] - lr[0]


def annealing_area(lr: np.ndarray, steps: np.ndarray, lam: float = TISSUE_LAMBDA) -> np.ndarray:
    """Tissue et al.'s S2(t) = sum_{i<=t} m_i, m_i = lam m_{i-1} + (lr[i-1] - lr[i])."""
    from scipy.signal import lfilter

    gaps = -np.diff(lr)  # gaps[i-1] = lr[i-1] - lr[i], i = 1..T
    m = lfilter([1.0], [1.0, -lam], gaps)  # the momentum recurrence as a one-pole filter
    s2 = np.concatenate([[0.0], np.cumsum(m)])
    return s2[steps]


# --------------------------------------------------------------------------------------------
# The Multi-Power Law's loss drop, on the (evaluation step x change point) matrix


@dataclass(frozen=True)
class Drops:
    """A curve's LR change points k (the only steps that add to LD) and its row blocks.

    S_k(t) = cum[t] - cum[k-1] is rebuilt block by block in scratch memory, so that memory
    stays O(evaluations + change points) for curves of any length.
    """

    gap: np.ndarray  # lr[k-1] - lr[k] at the change points k
    eta: np.ndarray  # lr[k], floored above zero
    cum_t: np.ndarray  # cum[t] at the evaluation steps t
    cum_k: np.ndarray  # cum[k-1] at the change points k
    blocks: list  # (row slice, number of change points used by those rows)


def prepare_drops(lr: np.ndarray, steps: np.ndarray) -> Drops:
    """Rows are grouped so that (rows x change points at or before their last step) stays
    under BLOCK_ENTRIES. Within a block some k exceed a row's t; there cum[t] - cum[k-1] <= 0
    exactly (a cumulative sum of non-negative numbers never decreases), clipped to 0, and
    S = 0 gives G = 0: those entries add nothing."""
    k = np.flatnonzero(lr[1:] != lr[:-1]) + 1  # steps where the LR changes; no other adds to LD
    floor = ZERO_LR_FLOOR * max(float(lr.max()), np.finfo(float).tiny)
    cum = np.cumsum(lr)
    n_k = np.searchsorted(k, steps, side="right")  # change points at or before each t
    budget = BLOCK_ENTRIES  # read at call time, so that a test can make blocks tiny
    blocks, i = [], 0
    while i < len(steps):
        j = i + 1
        while j < len(steps) and (j + 1 - i) * n_k[j] <= budget:
            j += 1
        blocks.append((slice(i, j), int(n_k[j - 1])))
        i = j
    return Drops(gap=lr[k - 1] - lr[k], eta=np.maximum(lr[k], floor), cum_t=cum[steps],
                  cum_k=cum[k - 1], blocks=blocks)


def _rowdot(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """a @ w for a (rows x n) block, by einsum: @ goes to multi-threaded BLAS, which on a
    shared machine waits up to 8x longer for its threads than it computes."""
    return np.einsum("ij,j->i", a, w)


def loss_drop(drops: Drops, B, C, beta, gamma, jac: bool):
    """LD(t) at each evaluation step and, with `jac`, d(-LD)/d(log B, log C, log beta, log gamma).

    With cx = C lr_k^-gamma S, u = 1 + cx, e = u^-beta and q = e cx / u:
      LD = B sum d (1 - e);  dLD/dlogB = LD;  dLD/dlogC = B beta sum d q;
      dLD/dlogbeta = B beta sum d e ln u;  dLD/dloggamma = -B beta gamma sum d q ln lr_k.
    """
    n_rows = len(drops.cum_t)
    ld = np.zeros(n_rows)
    parts = np.zeros((n_rows, 3)) if jac else None
    scale = C * drops.eta ** (-gamma)
    gap_lneta = drops.gap * np.log(drops.eta)
    scratch = np.empty((4, 0))  # arrays reused by every block: 3x faster than allocating
    for rows, n in drops.blocks:
        if n == 0:
            continue
        size = (rows.stop - rows.start) * n
        if scratch.shape[1] < size:
            scratch = np.empty((4, max(size, BLOCK_ENTRIES)))
        cx, lnu, e, t = (a[:size].reshape(-1, n) for a in scratch)
        np.subtract(drops.cum_t[rows, None], drops.cum_k[None, :n], out=cx)  # S_k(t)
        np.maximum(cx, 0.0, out=cx)
        cx *= scale[:n]
        d = drops.gap[:n]
        np.log1p(cx, out=lnu)
        np.multiply(lnu, -beta, out=e)
        np.exp(e, out=e)
        ld[rows] = d.sum() - _rowdot(e, d)
        if jac:
            np.multiply(e, lnu, out=t)
            parts[rows, 0] = _rowdot(t, d)
            np.add(cx, 1.0, out=t)  # q = e cx / (1 + cx)
            np.divide(cx, t, out=t)
            t *= e
            parts[rows, 1] = _rowdot(t, d)
            parts[rows, 2] = _rowdot(t, gap_lneta[:n])
    ld *= B
    if not jac:
        return ld, None
    J = np.empty((n_rows, 4))
    J[:, 0] = -ld
    J[:, 1] = -B * beta * parts[:, 1]
    J[:, 2] = -B * beta * parts[:, 0]
    J[:, 3] = B * beta * gamma * parts[:, 2]
    return ld, J


def predict(form: str, params: dict, lr, steps, *, lam: float = TISSUE_LAMBDA) -> np.ndarray:
    """The law's loss at `steps` of the LR trace `lr` (lr[i] = LR of step i, i = 0..T)."""
    curve = Curve(lr=lr, steps=steps)
    p = _check_params(form, params)
    s1 = forward_area(curve.lr, curve.steps)
    power = p["L0"] + p["A"] * s1 ** (-p["alpha"])
    if form == "tissue":
        return power - p["C"] * annealing_area(curve.lr, curve.steps, lam)
    drops = prepare_drops(curve.lr, curve.steps)
    ld, _ = loss_drop(drops, p["B"], p["C"], p["beta"], p["gamma"], jac=False)
    return power - ld


def _check_params(form: str, params: dict) -> dict:
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; choose from {', '.join(FORMS)}")
    missing = [n for n in PARAM_NAMES[form] if n not in params]
    if missing:
        raise ValueError(f"{form}: missing parameter(s) {', '.join(missing)}")
    return {n: float(params[n]) for n in PARAM_NAMES[form]}


def relative_errors(pred: np.ndarray, loss: np.ndarray) -> tuple[float, float]:
    """(mean |pred - loss| / loss over the points, the same at the last point)."""
    rel = np.abs(pred - loss) / loss
    return float(rel.mean()), float(rel[-1])
