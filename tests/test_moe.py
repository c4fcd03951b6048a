"""The MoE MLP: one expert with k = 1 is the dense model; routing, gates and the aux loss."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from scalinglab.errors import UserError
from scalinglab.model.gpt import GPT, MLP, GPTConfig
from scalinglab.model.moe import MoEMLP, load_balancing_loss
from scalinglab.model.parametrization import ParametrizationConfig, init_weights, param_groups

DENSE = GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_embd=16, n_head=2)
SP = ParametrizationConfig("sp")


def build(cfg: GPTConfig, pcfg: ParametrizationConfig = SP, seed: int = 0) -> GPT:
    model = GPT(cfg)
    init_weights(model, pcfg, torch.Generator().manual_seed(seed))
    return model


def tokens(B=3, T=16, seed=1):
    return torch.randint(0, 64, (B, T), generator=torch.Generator().manual_seed(seed))


def test_one_expert_top1_is_the_dense_model_same_init_same_outputs_same_grads():
    dense = build(DENSE)
    moe = build(replace(DENSE, mlp="moe", n_experts=1, moe_top_k=1))
    moe_params = dict(moe.named_parameters())
    for name, p in dense.named_parameters():
        twin = moe_params[name.replace(".mlp.", ".mlp.experts.0.")]
        assert torch.equal(p, twin), name  # same init: the router is drawn after everything
    idx, tgt = tokens(), tokens(seed=2)
    dense.eval()
    moe.eval()
    logits_d, loss_d = dense(idx, tgt)
    logits_m, loss_m = moe(idx, tgt)
    assert torch.equal(logits_d, logits_m)
    assert torch.equal(loss_d, loss_m)  # eval: cross-entropy only
    dense.train()
    moe.train()
    _, loss_d = dense(idx, tgt)
    _, loss_m = moe(idx, tgt)
    # one expert takes every token with probability 1: aux = 1 * f * P = 1 in each layer
    assert loss_m.item() == pytest.approx(loss_d.item() + 0.01 * 1.0, abs=1e-6)
    loss_d.backward()
    loss_m.backward()
    for name, p in dense.named_parameters():
        twin = moe_params[name.replace(".mlp.", ".mlp.experts.0.")]
        torch.testing.assert_close(p.grad, twin.grad, rtol=0, atol=1e-7, msg=name)


def test_routing_matches_a_per_token_reference():
    cfg = replace(DENSE, mlp="moe", n_experts=4, moe_top_k=2)
    torch.manual_seed(0)
    layer = MoEMLP(cfg, MLP)
    with torch.no_grad():
        layer.router.weight.normal_(0, 1.0)  # spread the routing over all experts
    x = torch.randn(2, 7, 16, dtype=torch.float32)
    got = layer(x)
    want = torch.zeros_like(x)
    used = set()
    for b in range(2):
        for t in range(7):
            probs = torch.softmax(layer.router(x[b, t]), dim=-1)
            top = torch.topk(probs, 2)
            for gate, e in zip(top.values, top.indices.tolist(), strict=True):
                want[b, t] += gate * layer.experts[e](x[b, t])  # gates not renormalised
                used.add(e)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert len(used) >= 3  # the test exercises more than one expert


def test_load_balancing_loss_hand_values():
    # f = [1/2, 1/2], P = [0.55, 0.45]: 2 * (0.5 * 0.55 + 0.5 * 0.45) = 1
    probs = torch.tensor([[0.7, 0.3], [0.4, 0.6]])
    assert load_balancing_loss(probs, torch.tensor([[0], [1]]), 2).item() == pytest.approx(1.0)
    # both tokens to expert 0: f = [1, 0]; 2 * 0.55 = 1.1
    assert load_balancing_loss(probs, torch.tensor([[0], [0]]), 2).item() == pytest.approx(1.1)
    # uniform routing is 1 for any k (f over the T*k assignments)
    uniform = torch.full((4, 4), 0.25)
    chosen = torch.tensor([[0, 1], [2, 3], [1, 0], [3, 2]])
    assert load_balancing_loss(uniform, chosen, 4).item() == pytest.approx(1.0)
    # every token certain of expert 0: E
    certain = torch.tensor([[1.0, 0.0, 0.0]] * 5)
    assert load_balancing_loss(certain, torch.zeros(5, 1, dtype=torch.long), 3).item() == 3.0


def test_aux_loss_reaches_the_training_loss_and_the_router():
    cfg = replace(DENSE, mlp="moe", n_experts=4, moe_top_k=2, moe_aux_coef=0.5)
    model = build(cfg)
    idx, tgt = tokens(), tokens(seed=2)
    model.eval()
    _, ce = model(idx, tgt)
    model.train()
    _, loss = model(idx, tgt)
    aux = [block.mlp.aux_loss.item() for block in model.transformer.h]
    assert all(a >= 1.0 - 1e-6 for a in aux)  # E * sum f P is at least 1 (Cauchy-Schwarz-like)
    assert loss.item() == pytest.approx(ce.item() + 0.5 * sum(aux) / len(aux), rel=1e-6)
    loss.backward()
    for block in model.transformer.h:
        assert block.mlp.router.weight.grad.abs().sum() > 0


def test_router_is_its_own_kind_with_hidden_rules():
    cfg = replace(DENSE, n_embd=64, mlp="moe", n_experts=3, moe_top_k=1)
    kinds = GPT(cfg).parameter_kinds()
    assert kinds["transformer.h.0.mlp.router.weight"] == "router"
    assert kinds["transformer.h.1.mlp.experts.2.c_fc.weight"] == "hidden"
    pcfg = ParametrizationConfig("mup", base_width=16)  # m = 4
    model = build(cfg, pcfg)
    groups = {g["name"]: g for g in param_groups(model, pcfg, lr=1e-2, weight_decay=0.1)}
    assert groups["router"]["lr_mult"] == 0.25 and len(groups["router"]["params"]) == 2
    assert len(groups["hidden"]["params"]) == 2 * (2 + 3 * 2)  # attn 2, experts 3 x 2
    # the experts' c_proj get GPT-2's residual init, / sqrt(2 * n_layer), after muP's / sqrt(m)
    c_proj = torch.cat([model.transformer.h[i].mlp.experts[e].c_proj.weight.flatten()
                        for i in range(2) for e in range(3)])
    assert c_proj.std().item() == pytest.approx(0.02 / 2 / 2, rel=0.05)
    router = torch.cat([b.mlp.router.weight.flatten() for b in model.transformer.h])
    assert router.std().item() == pytest.approx(0.02 / 2, rel=0.15)


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"mlp": "sparse"}, "mlp"),
        ({"mlp": "moe", "n_experts": 2, "moe_top_k": 3}, "moe_top_k"),
        ({"mlp": "moe", "n_experts": 0}, "n_experts"),
        ({"mlp": "moe", "moe_aux_coef": -1.0}, "moe_aux_coef"),
    ],
)
def test_bad_moe_settings_name_the_key(changes, key):
    with pytest.raises(UserError, match=rf"^{key}:"):
        replace(DENSE, **changes)


def test_top_k_equal_to_experts_uses_every_expert_with_softmax_gates():
    cfg = replace(DENSE, mlp="moe", n_experts=3, moe_top_k=3)
    torch.manual_seed(0)
    layer = MoEMLP(cfg, MLP)
    x = torch.randn(1, 4, 16)
    probs = torch.softmax(layer.router(x), dim=-1)  # (1, 4, 3)
    want = sum(probs[..., e:e + 1] * layer.experts[e](x) for e in range(3))
    torch.testing.assert_close(layer(x), want, rtol=1e-5, atol=1e-6)
    assert layer.aux_loss.item() == pytest.approx(1.0)  # every expert gets 1/3 of the slots
    assert math.isclose(probs.sum(-1).mean().item(), 1.0, rel_tol=1e-6)
