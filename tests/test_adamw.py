"""The CPU AdamW (training.adamw) against torch.optim.AdamW: the same numbers, bit for bit, and
state dicts that move between the two."""

import pytest
import torch

from scalinglab.training.adamw import AdamW


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.GELU(), torch.nn.Linear(8, 3))


def _groups(model):
    matrices = [p for p in model.parameters() if p.ndim == 2]
    vectors = [p for p in model.parameters() if p.ndim == 1]
    return [{"params": matrices, "lr": 3e-3, "lr_mult": 0.5, "weight_decay": 0.1, "eps": 1e-8,
             "name": "hidden"},
            {"params": vectors, "lr": 1e-2, "lr_mult": 1.0, "weight_decay": 0.0, "eps": 1e-6,
             "name": "vector"}]


def _train(model, optimizer, steps, start=0):
    for step in range(start, start + steps):
        for group in optimizer.param_groups:  # a schedule moves the LR every step, as training does
            group["lr"] = 2e-2 * (1 - step / 20) * group["lr_mult"]
        x = torch.randn(16, 6, generator=torch.Generator().manual_seed(step))
        loss = model(x).square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def _torch_adamw(model):
    return torch.optim.AdamW(_groups(model), lr=1e-3, betas=(0.9, 0.95))


def test_every_weight_is_bitwise_torchs_after_ten_steps():
    ours, theirs = _model(), _model()
    _train(ours, AdamW(_groups(ours), lr=1e-3, betas=(0.9, 0.95)), 10)
    _train(theirs, _torch_adamw(theirs), 10)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)
    # and the update did move them: equal because both trained, not because neither did
    assert not torch.equal(next(ours.parameters()), next(_model().parameters()))


@pytest.mark.parametrize("direction", ["ours->torch", "torch->ours"])
def test_a_saved_state_resumes_in_the_other_optimizer_exactly(direction):
    reference = _model()
    _train(reference, _torch_adamw(reference), 8)

    first = _model()
    make_first, make_second = ((lambda m: AdamW(_groups(m), betas=(0.9, 0.95)), _torch_adamw)
                               if direction == "ours->torch"
                               else (_torch_adamw, lambda m: AdamW(_groups(m), betas=(0.9, 0.95))))
    optimizer = make_first(first)
    _train(first, optimizer, 4)
    state = optimizer.state_dict()
    resumed = _model(seed=1)
    resumed.load_state_dict(first.state_dict())
    second = make_second(resumed)
    second.load_state_dict(state)
    assert second.param_groups[0]["name"] == "hidden"
    _train(resumed, second, 4, start=4)
    for a, b in zip(resumed.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_state_of_other_groups_is_refused():
    model = _model()
    optimizer = AdamW(_groups(model))
    _train(model, optimizer, 1)
    other = AdamW([{"params": list(_model().parameters())}])
    with pytest.raises(ValueError, match="other parameter groups"):
        other.load_state_dict(optimizer.state_dict())


def test_zero_grad_clears_or_zeroes():
    model = _model()
    optimizer = AdamW(model.parameters())
    model(torch.ones(1, 6)).sum().backward()
    optimizer.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())
    optimizer.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_a_cpu_checkpoint_resumes_on_the_kernel_the_job_built():
    """A CPU job saves fused=None; torch's own load would keep it, so a CUDA job resuming the
    checkpoint would run the unfused update. The job's kernel wins, the moments still load."""
    from scalinglab.training.spec import load_optimizer_state

    model = _model()
    cpu = AdamW(_groups(model), betas=(0.9, 0.95))
    _train(model, cpu, 3)
    saved = cpu.state_dict()
    assert saved["param_groups"][0]["fused"] is None

    resumed = _model(seed=1)
    resumed.load_state_dict(model.state_dict())
    fused = torch.optim.AdamW(_groups(resumed), betas=(0.9, 0.95), fused=True)
    load_optimizer_state(fused, saved)
    assert [group["fused"] for group in fused.param_groups] == [True, True]
    assert fused.param_groups[1]["name"] == "vector"
    assert fused.param_groups[0]["lr"] == saved["param_groups"][0]["lr"]
    first = next(iter(fused.state.values()))
    assert float(first["step"]) == 3.0

    # a plain load, as before, leaves the checkpoint's setting in place
    plain = torch.optim.AdamW(_groups(_model()), betas=(0.9, 0.95), fused=True)
    plain.load_state_dict(saved)
    assert plain.param_groups[0]["fused"] is None

    # and a state of other groups is still refused
    other = torch.optim.AdamW([{"params": list(_model().parameters())}], fused=True)
    with pytest.raises(ValueError):
        load_optimizer_state(other, saved)
