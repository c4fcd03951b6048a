import math

import pytest
import torch

from scalinglab.errors import UserError
from scalinglab.model.gpt import GPT, GPTConfig
from scalinglab.model.parametrization import (
    ParametrizationConfig,
    depth_multiplier,
    init_std,
    init_weights,
    model_multipliers,
    param_groups,
    rule_factors,
    width_multiplier,
)

BASE = 16
SHAPE = dict(vocab_size=64, block_size=16, n_layer=2, n_head=2)


def build(pcfg, n_embd, seed=0):
    cfg = GPTConfig(n_embd=n_embd, **SHAPE, **model_multipliers(pcfg, 2, n_embd, 2))
    model = GPT(cfg)
    init_weights(model, pcfg, torch.Generator().manual_seed(seed))
    return model


def test_multipliers_hand_computed():
    sp = ParametrizationConfig("sp", base_width=BASE, output_mult=2.0, emb_scale=3.0)
    mup = ParametrizationConfig("mup", base_width=BASE, output_mult=2.0, emb_scale=3.0)
    # width 64, 2 heads: d_head = 32; muP m = 4
    assert model_multipliers(sp, 2, 64, 2) == {
        "emb_scale": 3.0,
        "logit_scale": 2.0,
        "attn_scale": 1 / math.sqrt(32),
        "residual_scale": 1.0,
    }
    assert model_multipliers(mup, 2, 64, 2) == {
        "emb_scale": 3.0,
        "logit_scale": 0.5,
        "attn_scale": 1 / 32,
        "residual_scale": 1.0,
    }
    deep = ParametrizationConfig("mup", base_width=BASE, depth_scale=True, attn_scale="sqrt")
    got = model_multipliers(deep, 4, 16, 2)
    assert got["residual_scale"] == 0.5
    assert got["attn_scale"] == 1 / math.sqrt(8)
    assert got["logit_scale"] == 1.0  # m = 1
    lin = ParametrizationConfig("sp", attn_scale="linear")
    assert model_multipliers(lin, 2, 64, 2)["attn_scale"] == 1 / 32


def test_width_multiplier():
    assert width_multiplier(ParametrizationConfig("mup", base_width=16), 64) == 4.0
    assert width_multiplier(ParametrizationConfig("mup", base_width=16), 24) == 1.5
    # SP ignores base_width entirely
    assert width_multiplier(ParametrizationConfig("sp", base_width=512), 64) == 1.0


@pytest.mark.parametrize(
    "name, n_embd, hidden, c_proj",
    [
        # SP: constant 0.02, residual projections / sqrt(2 * n_layer) = / 2
        ("sp", 16, 0.02, 0.01),
        ("sp", 64, 0.02, 0.01),
        # muP: / sqrt(m); m = 1 and m = 4
        ("mup", 16, 0.02, 0.01),
        ("mup", 64, 0.01, 0.005),
    ],
)
def test_init_std_hand_computed_and_measured(name, n_embd, hidden, c_proj):
    pcfg = ParametrizationConfig(name, base_width=BASE)
    m = width_multiplier(pcfg, n_embd)
    assert init_std(pcfg, "transformer.h.0.attn.c_attn.weight", "hidden", 2, m) == hidden
    assert init_std(pcfg, "transformer.h.1.mlp.c_proj.weight", "hidden", 2, m) == c_proj
    assert init_std(pcfg, "transformer.wte.weight", "embedding", 2, m) == 0.02
    assert init_std(pcfg, "lm_head.weight", "readout", 2, m) == 0.02

    # measured: pool the weights that share an expected std (small matrices alone are noisy)
    model = build(pcfg, n_embd)
    kinds = model.parameter_kinds()
    pools: dict[float, list[torch.Tensor]] = {}
    for pname, p in model.named_parameters():
        if kinds[pname] == "vector":
            assert torch.all(p == 1.0), pname
        elif kinds[pname] == "hidden":
            pools.setdefault(c_proj if pname.endswith("c_proj.weight") else hidden, []).append(p)
        else:
            pools.setdefault(0.02, []).append(p)
    if hidden == 0.02:  # the hidden pool and the embedding pool coincide
        assert set(pools) == {0.02, c_proj}
    for std, members in pools.items():
        flat = torch.cat([p.detach().flatten() for p in members])
        assert flat.std().item() == pytest.approx(std, rel=0.05), std
        assert abs(flat.mean().item()) < 4 * std / math.sqrt(flat.numel())


def test_init_is_reproducible_by_generator():
    pcfg = ParametrizationConfig("mup", base_width=BASE)
    a, b, c = build(pcfg, 32, seed=1), build(pcfg, 32, seed=1), build(pcfg, 32, seed=2)
    for (n, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(pa, pb), n
        if pa.ndim > 1:
            assert not torch.equal(pa, pc), n


@pytest.mark.parametrize("name, n_embd, hidden_lr", [("sp", 64, 1e-2), ("mup", 64, 2.5e-3)])
def test_param_groups_hand_computed(name, n_embd, hidden_lr):
    pcfg = ParametrizationConfig(name, base_width=BASE)
    model = build(pcfg, n_embd)
    groups = param_groups(model, pcfg, lr=1e-2, weight_decay=0.1)
    summary = {
        g["name"]: (g["lr"], g["lr_mult"], g["weight_decay"], len(g["params"])) for g in groups
    }
    assert summary == {
        "embedding": (1e-2, 1.0, 0.1, 1),
        "position": (1e-2, 1.0, 0.1, 1),
        "hidden": (hidden_lr, hidden_lr / 1e-2, 0.1, 8),  # 4 matrices x 2 blocks
        "readout": (1e-2, 1.0, 0.1, 1),
        "vector": (1e-2, 1.0, 0.0, 5),  # ln_1, ln_2 x 2 blocks + ln_f
    }
    # every parameter in exactly one group, and AdamW takes the groups as they are
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    opt = torch.optim.AdamW(groups, lr=123.0)
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in groups]
    assert opt.param_groups[2]["lr_mult"] == hidden_lr / 1e-2


@pytest.mark.parametrize(
    "settings",
    [
        dict(attn_scale="sqrt"),
        dict(attn_scale="linear", output_mult=2.0, emb_scale=3.0, depth_scale=True),
    ],
)
def test_mup_equals_sp_at_base_width(settings):
    sp = ParametrizationConfig("sp", base_width=BASE, **settings)
    mup = ParametrizationConfig("mup", base_width=BASE, **settings)
    assert model_multipliers(sp, 2, BASE, 2) == model_multipliers(mup, 2, BASE, 2)
    a, b = build(sp, BASE, seed=3), build(mup, BASE, seed=3)
    assert a.config == b.config
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb), name

    ga = param_groups(a, sp, lr=3e-3, weight_decay=0.1)
    gb = param_groups(b, mup, lr=3e-3, weight_decay=0.1)
    strip = [{k: v for k, v in g.items() if k != "params"} for g in ga]
    assert strip == [{k: v for k, v in g.items() if k != "params"} for g in gb]

    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 64, (2, 16), generator=gen)
    tgt = torch.randint(0, 64, (2, 16), generator=gen)
    opt_a, opt_b = torch.optim.AdamW(ga), torch.optim.AdamW(gb)
    for model, opt in ((a, opt_a), (b, opt_b)):
        for _ in range(2):
            opt.zero_grad()
            model(idx, tgt)[1].backward()
            opt.step()
    la, lb = a(idx, tgt), b(idx, tgt)
    assert torch.equal(la[0], lb[0]) and la[1].item() == lb[1].item()


def test_mup_differs_from_sp_off_base_width():
    sp = ParametrizationConfig("sp", base_width=BASE, attn_scale="sqrt")
    mup = ParametrizationConfig("mup", base_width=BASE, attn_scale="sqrt")
    a, b = build(sp, 64, seed=3), build(mup, 64, seed=3)
    assert a.config.logit_scale == 4 * b.config.logit_scale
    wa = a.transformer.h[0].attn.c_attn.weight
    wb = b.transformer.h[0].attn.c_attn.weight
    torch.testing.assert_close(wb, wa / 2)  # same draws, std / sqrt(4)
    torch.testing.assert_close(b.transformer.wte.weight, a.transformer.wte.weight)


def test_auto_attention_scale_differs_by_parametrization():
    sp = model_multipliers(ParametrizationConfig("sp", base_width=BASE), 2, BASE, 2)
    mup = model_multipliers(ParametrizationConfig("mup", base_width=BASE), 2, BASE, 2)
    assert (sp["attn_scale"], mup["attn_scale"]) == (1 / math.sqrt(8), 1 / 8)


def test_bad_values_name_the_key():
    with pytest.raises(UserError, match=r"parametrization\.name.*'ntk'"):
        ParametrizationConfig("ntk")
    with pytest.raises(UserError, match=r"parametrization\.attn_scale"):
        ParametrizationConfig("mup", attn_scale="cubic")
    with pytest.raises(UserError, match=r"parametrization\.base_width"):
        ParametrizationConfig("mup", base_width=0)
    with pytest.raises(UserError, match=r"parametrization\.init_std"):
        ParametrizationConfig("sp", init_std=0.0)
    with pytest.raises(UserError, match=r"parametrization\.output_mult"):
        ParametrizationConfig("sp", output_mult="1")
    with pytest.raises(UserError, match=r"parametrization\.base_width.*n_embd=32"):
        model_multipliers(ParametrizationConfig("mup", base_width=64), 2, 32, 2)


def _rule_names(text: str) -> list[str]:
    """The first column of a markdown rule table: `| `name` | ...` rows, in order."""
    return [line.split("`")[1] for line in text.splitlines() if line.startswith("| `")]


def test_docs_list_the_rules_of_the_docstring_table():
    """docs/parametrization.md carries the muP rule table of the docstring, rule for rule."""
    from helpers import REPO
    from scalinglab.model import parametrization

    page = (REPO / "docs" / "parametrization.md").read_text()
    section = page.split("## Parametrizations: SP and muP")[1].split("\n## ")[0]
    assert _rule_names(section) == _rule_names(parametrization.__doc__)
    assert "router.lr" in _rule_names(section)


# ---------------------------------------------------------------- CompleteP (arXiv:2505.01618)


def completep(**settings) -> ParametrizationConfig:
    return ParametrizationConfig("completep", **({"base_width": BASE, "base_depth": 2} | settings))


@pytest.mark.parametrize(
    "n_embd, n_layer, alpha, expected",
    [
        # m_w = m_d = 1: every factor is muP's at base width, i.e. 1 (and no decay on gains)
        (16, 2, 1.0, {"residual.mult": 1.0, "hidden.lr": 1.0, "vector.lr": 1.0, "adam.eps": 1.0,
                      "hidden.weight_decay": 1.0, "vector.weight_decay": 0.0}),
        # m_w = 4, m_d = 1: muP's width rules; eps / 4; hidden decay x 4 so that lr * wd is fixed
        (64, 2, 1.0, {"residual.mult": 1.0, "hidden.lr": 0.25, "vector.lr": 1.0,
                      "adam.eps": 0.25, "hidden.weight_decay": 4.0, "embedding.weight_decay": 1.0,
                      "hidden.init_std": 0.5, "logits.scale": 0.25}),
        # m_w = 1, m_d = 4, alpha = 1: branches / 4, eps / 4; LRs unchanged (m_d^0)
        (16, 8, 1.0, {"residual.mult": 0.25, "hidden.lr": 1.0, "router.lr": 1.0, "vector.lr": 1.0,
                      "adam.eps": 0.25, "hidden.weight_decay": 1.0, "readout.lr": 1.0}),
        # m_w = 4, m_d = 4, alpha = 1
        (64, 8, 1.0, {"residual.mult": 0.25, "hidden.lr": 0.25, "vector.lr": 1.0,
                      "adam.eps": 0.0625, "hidden.weight_decay": 4.0,
                      "embedding.lr": 1.0, "embedding.weight_decay": 1.0}),
        # m_w = 4, m_d = 4, alpha = 0.5 (Depth-muP): branches m_d^-0.5, hidden lr
        # m_w^-1 m_d^-0.5, gains m_d^-0.5, eps m_w^-1 m_d^-0.5, hidden decay m_w m_d^0.5
        (64, 8, 0.5, {"residual.mult": 0.5, "hidden.lr": 0.125, "router.lr": 0.125,
                      "vector.lr": 0.5, "adam.eps": 0.125, "hidden.weight_decay": 8.0,
                      "router.weight_decay": 8.0, "vector.weight_decay": 0.0,
                      "readout.weight_decay": 1.0}),
        # m_d = 16 / 2 = 8 at m_w = 2
        (32, 16, 1.0, {"residual.mult": 0.125, "hidden.lr": 0.5, "adam.eps": 0.0625,
                       "hidden.weight_decay": 2.0}),
    ],
)
def test_completep_rules_at_listed_multipliers(n_embd, n_layer, alpha, expected):
    factors = rule_factors(completep(alpha=alpha), n_layer, n_embd)
    assert {k: factors[k] for k in expected} == expected
    assert depth_multiplier(completep(), n_layer) == n_layer / 2
    # the depth rules belong to CompleteP alone
    for name in ("sp", "mup"):
        plain = rule_factors(ParametrizationConfig(name, base_width=BASE, base_depth=2), 8, 16)
        assert plain["residual.mult"] == plain["adam.eps"] == plain["vector.lr"] == 1.0


def test_completep_multipliers_init_and_groups_hand_computed():
    pcfg = completep()
    # width 64 (m_w = 4, d_head 32), 8 layers (m_d = 4)
    assert model_multipliers(pcfg, 8, 64, 2) == {
        "emb_scale": 1.0, "logit_scale": 0.25, "attn_scale": 1 / 32, "residual_scale": 0.25}
    # c_proj keeps GPT-2's 1/sqrt(2 n_layer) at the base depth: 0.02 / 2 / sqrt(4)
    assert init_std(pcfg, "transformer.h.7.mlp.c_proj.weight", "hidden", 8, 4.0) == 0.005
    assert init_std(pcfg, "transformer.h.0.attn.c_attn.weight", "hidden", 8, 4.0) == 0.01
    mup = ParametrizationConfig("mup", base_width=BASE)
    assert init_std(mup, "transformer.h.7.mlp.c_proj.weight", "hidden", 8, 4.0) == 0.0025

    cfg = GPTConfig(n_embd=64, vocab_size=64, block_size=16, n_layer=8, n_head=2,
                    **model_multipliers(pcfg, 8, 64, 2))
    model = GPT(cfg)
    init_weights(model, pcfg, torch.Generator().manual_seed(0))
    groups = param_groups(model, pcfg, lr=1e-2, weight_decay=0.1)
    summary = {g["name"]: (g["lr"], g["lr_mult"], g["weight_decay"], g["eps"]) for g in groups}
    assert summary == {
        "embedding": (1e-2, 1.0, 0.1, 1e-8 / 16),
        "position": (1e-2, 1.0, 0.1, 1e-8 / 16),
        "hidden": (2.5e-3, 0.25, 0.1 * 4.0, 1e-8 / 16),
        "readout": (1e-2, 1.0, 0.1, 1e-8 / 16),
        "vector": (1e-2, 1.0, 0.0, 1e-8 / 16),
    }
    # decoupled AdamW decays by lr * weight_decay: the same in every decayed group
    assert {g["lr"] * g["weight_decay"] for g in groups if g["name"] != "vector"} == {1e-3}
    opt = torch.optim.AdamW(groups, lr=1.0)
    assert [g["eps"] for g in opt.param_groups] == [1e-8 / 16] * 5


def test_sp_and_mup_groups_carry_torchs_default_eps():
    """SP and muP do not scale epsilon: every group has torch's AdamW default, so the optimizer
    steps exactly as it did before groups carried an "eps"."""
    default_eps = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))]).defaults["eps"]
    for name in ("sp", "mup"):
        pcfg = ParametrizationConfig(name, base_width=BASE)
        assert {g["eps"] for g in param_groups(build(pcfg, 64), pcfg, 1e-2, 0.1)} == {default_eps}


def train_two_steps(model, groups):
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 64, (2, 16), generator=gen)
    tgt = torch.randint(0, 64, (2, 16), generator=gen)
    opt = torch.optim.AdamW(groups)
    for _ in range(2):
        opt.zero_grad()
        model(idx, tgt)[1].backward()
        opt.step()
    return model(idx, tgt)


@pytest.mark.parametrize("n_embd", [BASE, 64])
def test_completep_equals_mup_at_base_depth(n_embd):
    """m_d = 1 (n_layer = base_depth): CompleteP's init, multipliers and learning rates are
    muP's exactly, at any width. Its epsilon and weight decay follow their width rules (eps / m,
    lambda * m on hidden matrices), which the project's muP does not have, so at m_w = 1 too the
    whole training step is the same, bit for bit."""
    settings = dict(attn_scale="linear", output_mult=2.0, emb_scale=3.0)
    mup = ParametrizationConfig("mup", base_width=BASE, **settings)
    cp = ParametrizationConfig("completep", base_width=BASE, base_depth=2, **settings)
    assert model_multipliers(cp, 2, n_embd, 2) == model_multipliers(mup, 2, n_embd, 2)
    a, b = build(mup, n_embd, seed=3), build(cp, n_embd, seed=3)
    assert a.config == b.config
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb), name
    ga = param_groups(a, mup, lr=3e-3, weight_decay=0.1)
    gb = param_groups(b, cp, lr=3e-3, weight_decay=0.1)
    m = n_embd / BASE
    for x, y in zip(ga, gb, strict=True):
        assert (x["name"], x["lr"], x["lr_mult"]) == (y["name"], y["lr"], y["lr_mult"])
        assert y["eps"] == x["eps"] / m
        assert y["weight_decay"] == (x["weight_decay"] * m if x["name"] == "hidden"
                                     else x["weight_decay"])
    if n_embd == BASE:
        strip = [{k: v for k, v in g.items() if k != "params"} for g in ga]
        assert strip == [{k: v for k, v in g.items() if k != "params"} for g in gb]
        la, lb = train_two_steps(a, ga), train_two_steps(b, gb)
        assert torch.equal(la[0], lb[0]) and la[1].item() == lb[1].item()


def test_completep_differs_from_mup_off_base_depth():
    mup = ParametrizationConfig("mup", base_width=BASE)
    cp = completep()
    assert model_multipliers(cp, 8, BASE, 2)["residual_scale"] == 0.25
    assert model_multipliers(mup, 8, BASE, 2)["residual_scale"] == 1.0
    cfg = GPTConfig(n_embd=BASE, vocab_size=64, block_size=16, n_layer=8, n_head=2,
                    **model_multipliers(cp, 8, BASE, 2))
    model = GPT(cfg)
    init_weights(model, cp, torch.Generator().manual_seed(0))
    proj = torch.cat([model.transformer.h[i].mlp.c_proj.weight.flatten() for i in range(8)])
    assert proj.std().item() == pytest.approx(0.02 / 2, rel=0.05)  # 1/sqrt(2 * base_depth)


def test_completep_bad_values_name_the_key():
    with pytest.raises(UserError, match=r"parametrization\.base_depth"):
        completep(base_depth=0)
    with pytest.raises(UserError, match=r"parametrization\.base_depth"):
        ParametrizationConfig("completep", base_depth=2.5)
    with pytest.raises(UserError, match=r"parametrization\.alpha.*0\.3"):
        completep(alpha=0.3)
    with pytest.raises(UserError, match=r"parametrization\.alpha"):
        completep(alpha=True)
    with pytest.raises(UserError, match=r"parametrization\.depth_scale"):
        completep(depth_scale=True)
    with pytest.raises(UserError, match=r"parametrization\.base_width: CompleteP.*n_embd=8"):
        model_multipliers(completep(), 2, 8, 2)
    # the CompleteP keys are checked under any name, and ignored by SP and muP
    with pytest.raises(UserError, match=r"parametrization\.alpha"):
        ParametrizationConfig("mup", alpha=2.0)
    assert depth_multiplier(ParametrizationConfig("mup", base_depth=4), 8) == 1.0


# ------------------------------------------- independent weight decay (arXiv:2405.13698)
def _decay_by_group(pcfg, n_embd, n_layer=2):
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=n_layer, n_embd=n_embd,
                          n_head=2, **model_multipliers(pcfg, n_layer, n_embd, 2)))
    return {g["name"]: (g["lr"], g["weight_decay"])
            for g in param_groups(model, pcfg, lr=1e-2, weight_decay=0.1)}


def test_independent_weight_decay_keeps_lr_times_decay_fixed_under_mup():
    independent = ParametrizationConfig("mup", base_width=16, independent_weight_decay=True)
    coupled = ParametrizationConfig("mup", base_width=16)
    # m = 4: hidden lr 1e-2 / 4, its decay 0.1 * 4; embeddings and readout keep lr and decay
    assert _decay_by_group(independent, 64) == {
        "embedding": (1e-2, 0.1), "position": (1e-2, 0.1), "hidden": (2.5e-3, 0.4),
        "readout": (1e-2, 0.1),
        "vector": (1e-2, 0.0)}
    assert _decay_by_group(coupled, 64) == {
        "embedding": (1e-2, 0.1), "position": (1e-2, 0.1), "hidden": (2.5e-3, 0.1),
        "readout": (1e-2, 0.1),
        "vector": (1e-2, 0.0)}
    # m = 1: the option changes nothing
    assert _decay_by_group(independent, 16) == _decay_by_group(coupled, 16)
    factors = rule_factors(independent, 2, 32)  # m = 2
    assert (factors["hidden.weight_decay"], factors["router.weight_decay"],
            factors["embedding.weight_decay"], factors["vector.weight_decay"]) == (2.0, 2.0,
                                                                                  1.0, 0.0)


def test_independent_weight_decay_is_completeps_rule_and_nothing_under_sp():
    sp = ParametrizationConfig("sp", independent_weight_decay=True)
    assert _decay_by_group(sp, 64) == _decay_by_group(ParametrizationConfig("sp"), 64)
    # CompleteP keeps lr * lambda fixed with or without the key (its own rule, same code)
    cp = ParametrizationConfig("completep", base_width=16, base_depth=2)
    cp_on = ParametrizationConfig("completep", base_width=16, base_depth=2,
                                  independent_weight_decay=True)
    assert _decay_by_group(cp, 64, 4) == _decay_by_group(cp_on, 64, 4)
    mup_on = ParametrizationConfig("mup", base_width=16, independent_weight_decay=True)
    assert _decay_by_group(mup_on, 64) == _decay_by_group(cp, 64)  # m_d = 1: the same groups
    with pytest.raises(UserError, match=r"parametrization\.independent_weight_decay"):
        ParametrizationConfig("mup", independent_weight_decay="yes")


def test_spec_carries_independent_weight_decay_only_when_on():
    from scalinglab.phases.study import run_parametrization

    section = {"name": "mup", "base_width": 16, "base_depth": 2, "alpha": 1.0,
               "independent_weight_decay": False}
    assert run_parametrization(section) == {"name": "mup", "base_width": 16}
    on = dict(section, independent_weight_decay=True)
    assert run_parametrization(on) == {"name": "mup", "base_width": 16,
                                       "independent_weight_decay": True}
