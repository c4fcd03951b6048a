"""Training and evaluation batches from a flat token file, positioned by the step alone.

The file is cut into ``n_windows`` non-overlapping windows of ``block_size + 1`` tokens (the
tail that does not fill a window is unused); a window gives ``x`` = its first ``block_size``
tokens and ``y`` = the same shifted by one. Training reads the windows in epochs: epoch ``e``
is the permutation of ``range(n_windows)`` drawn by ``np.random.default_rng([seed, e])``, the
epochs are concatenated, and step ``s`` takes entries ``s*B .. s*B + B - 1`` of that sequence.
A batch is therefore a pure function of (seed, step, B): resuming needs only the step, and every
window is seen exactly once per epoch, a batch crossing an epoch boundary included.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from scalinglab.errors import UserError


def _require_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise UserError(f"{name} must be a positive integer, not {value!r}")


class TokenData:
    """A read-only memory map of one ``.bin`` file written by `scalinglab.data.tokenizer`."""

    def __init__(self, bin_path: Path, dtype: str, block_size: int):
        self.path = Path(bin_path)
        self.dtype = np.dtype(dtype)
        _require_positive("block_size", block_size)
        self.block_size = block_size
        if not self.path.is_file():
            raise UserError(f"{self.path}: no such token file")
        size = self.path.stat().st_size
        if size % self.dtype.itemsize:
            raise UserError(f"{self.path}: {size} bytes is not a whole number of {self.dtype}")
        self.n_tokens = size // self.dtype.itemsize
        self.n_windows = self.n_tokens // (block_size + 1)
        if self.n_windows < 1:
            raise UserError(
                f"{self.path}: {self.n_tokens} tokens, too few for one window of "
                f"block_size + 1 = {block_size + 1} tokens"
            )
        self._tokens = np.memmap(self.path, dtype=self.dtype, mode="r")
        self._offsets = np.arange(block_size + 1, dtype=np.int64)
        self._orders: dict[tuple[int, int], np.ndarray] = {}

    def epoch_order(self, seed: int, epoch: int) -> np.ndarray:
        """The window indices of one epoch, in training order."""
        key = (seed, epoch)
        if key not in self._orders:
            if len(self._orders) >= 2:  # a batch spans at most two epochs; keep memory flat
                self._orders.pop(next(iter(self._orders)))
            self._orders[key] = np.random.default_rng([seed, epoch]).permutation(self.n_windows)
        return self._orders[key]

    def windows_for_step(self, step: int, batch_size: int, seed: int) -> np.ndarray:
        """The window indices of training batch ``step`` (shape ``(batch_size,)``)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, not {step}")
        self._check_batch(batch_size)
        pos = step * batch_size + np.arange(batch_size, dtype=np.int64)
        epochs, within = np.divmod(pos, self.n_windows)
        out = np.empty(batch_size, dtype=np.int64)
        for epoch in np.unique(epochs):
            sel = epochs == epoch
            out[sel] = self.epoch_order(seed, int(epoch))[within[sel]]
        return out

    def train_batch(
        self, step: int, batch_size: int, seed: int, rank: int = 0, world: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x, y`` of training step ``step``: int64 tensors of shape (B, T), or with ``world``
        data-parallel processes this ``rank``'s rows ``rank::world`` of them (B / world each)."""
        return self._gather(self.windows_for_step(step, batch_size, seed)[rank::world])

    def eval_batches(
        self, batch_size: int, max_tokens: int
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The first windows in file order, ``batch_size`` at a time (the last batch may be
        smaller), up to ``max_tokens`` target tokens: the same every call and every run."""
        _require_positive("batch_size", batch_size)
        n = min(self.n_windows, max_tokens // self.block_size)
        if n < 1:
            raise UserError(
                f"eval max_tokens={max_tokens} is less than one window of "
                f"block_size={self.block_size} tokens"
            )
        windows = np.arange(n, dtype=np.int64)
        return [self._gather(windows[i : i + batch_size]) for i in range(0, n, batch_size)]

    def epochs_for(self, n_tokens: int) -> float:
        """How many passes over this file ``n_tokens`` training (target) tokens make."""
        return n_tokens / (self.n_windows * self.block_size)

    def _check_batch(self, batch_size: int) -> None:
        _require_positive("batch_size", batch_size)
        if batch_size > self.n_windows:
            raise UserError(
                f"{self.path}: {self.n_windows} windows of {self.block_size + 1} tokens, "
                f"fewer than one batch of {batch_size}"
            )

    def _gather(self, windows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        # One fancy-index read of (B, T+1) tokens; the memmap pages in only what is touched.
        idx = windows[:, None] * (self.block_size + 1) + self._offsets[None, :]
        chunk = torch.from_numpy(self._tokens[idx].astype(np.int64))
        return chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()
