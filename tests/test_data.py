import numpy as np
import pytest
import torch

from scalinglab.errors import UserError
from scalinglab.training.batches import TokenData

T = 4  # block_size; a window is T + 1 = 5 tokens


def token_file(tmp_path, n_tokens, dtype="uint16", name="train.bin"):
    path = tmp_path / name
    np.arange(n_tokens, dtype=dtype).tofile(path)  # token value == position: windows are legible
    return path


@pytest.fixture
def data(tmp_path):
    return TokenData(token_file(tmp_path, 52), "uint16", T)  # 10 windows, 2 tail tokens unused


def test_sizes(data):
    assert (data.n_tokens, data.n_windows) == (52, 10)


def test_x_and_y_are_a_window_shifted_by_one(data):
    x, y = data.train_batch(step=3, batch_size=4, seed=0)
    assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (4, T)
    for row_x, row_y in zip(x, y, strict=True):
        start = int(row_x[0])
        assert start % (T + 1) == 0 and start < 50
        assert row_x.tolist() == list(range(start, start + T))
        assert row_y.tolist() == list(range(start + 1, start + T + 1))


def test_batches_are_a_function_of_seed_and_step(tmp_path):
    path = token_file(tmp_path, 52)
    a, b = TokenData(path, "uint16", T), TokenData(path, "uint16", T)
    later = b.train_batch(7, 3, seed=5)  # read out of order on purpose
    for step in range(9):
        xa, ya = a.train_batch(step, 3, seed=5)
        xb, yb = b.train_batch(step, 3, seed=5)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(a.train_batch(7, 3, seed=5)[0], later[0])
    seeds = {tuple(a.train_batch(0, 3, seed=s)[0][:, 0].tolist()) for s in range(6)}
    assert len(seeds) > 1


def test_each_window_once_per_epoch_across_boundaries(data):
    # B = 3 does not divide 10 windows: steps 3, 6 and 9 each straddle two epochs.
    order = np.concatenate([data.windows_for_step(s, 3, seed=11) for s in range(10)])
    epochs = order.reshape(3, 10)
    for e, epoch in enumerate(epochs):
        assert sorted(epoch.tolist()) == list(range(10))
        expected = np.random.default_rng([11, e]).permutation(10)
        np.testing.assert_array_equal(epoch, expected)
    assert not np.array_equal(epochs[0], epochs[1])  # a fresh order every epoch
    x, _ = data.train_batch(3, 3, seed=11)
    assert (x[:, 0] // (T + 1)).tolist() == order[9:12].tolist()


def test_eval_batches_are_the_first_windows_in_order(data):
    batches = data.eval_batches(batch_size=3, max_tokens=7 * T + 2)  # 7 whole windows fit
    assert [x.shape[0] for x, _ in batches] == [3, 3, 1]
    starts = torch.cat([x[:, 0] for x, _ in batches]).tolist()
    assert starts == [w * (T + 1) for w in range(7)]
    assert sum(y.numel() for _, y in batches) <= 7 * T + 2
    again = data.eval_batches(batch_size=3, max_tokens=7 * T + 2)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(batches, again, strict=True))
    assert sum(x.shape[0] for x, _ in data.eval_batches(4, 10**9)) == 10  # capped by the file


def test_epochs_for(data):
    assert data.epochs_for(10 * T) == 1.0
    assert data.epochs_for(25 * T) == 2.5
    assert data.epochs_for(0) == 0.0


def test_uint32_file(tmp_path):
    path = tmp_path / "big.bin"
    values = np.arange(70_000, 70_000 + 3 * (T + 1), dtype=np.uint32)
    values.tofile(path)
    data = TokenData(path, "uint32", T)
    x, y = data.eval_batches(3, 100)[0]
    assert x[0].tolist() == [70_000, 70_001, 70_002, 70_003] and int(y[2, -1]) == values[-1]


def test_too_little_data_names_the_file(tmp_path):
    short = token_file(tmp_path, T, name="short.bin")
    with pytest.raises(UserError, match="short.bin"):
        TokenData(short, "uint16", T)
    few = TokenData(token_file(tmp_path, 3 * (T + 1), name="few.bin"), "uint16", T)
    with pytest.raises(UserError, match="few.bin"):
        few.train_batch(0, 4, seed=0)
    with pytest.raises(UserError, match="missing.bin"):
        TokenData(tmp_path / "missing.bin", "uint16", T)
    (tmp_path / "odd.bin").write_bytes(b"\x00" * 7)
    with pytest.raises(UserError, match="odd.bin"):
        TokenData(tmp_path / "odd.bin", "uint16", 1)


def test_bad_sizes(data, tmp_path):
    with pytest.raises(UserError, match="block_size"):
        TokenData(token_file(tmp_path, 50), "uint16", 0)
    with pytest.raises(UserError, match="batch_size"):
        data.train_batch(0, 0, seed=0)
    with pytest.raises(UserError, match="max_tokens"):
        data.eval_batches(2, T - 1)
    with pytest.raises(ValueError, match="step"):
        data.train_batch(-1, 2, seed=0)
